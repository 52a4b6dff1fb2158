"""Classical baselines a site fits on its own splits, each with the deep model's tuning budget.

A federated deep model is only worth its privacy cost if it beats what a site could fit alone with
standard tools; the "ten tips" ask for those baselines, tuned as hard as the deep model (same number
of configurations, same tune split, same metric code), so that a win is not an artefact of unequal
effort. Every family here:

* draws ``budget`` configurations from ``fedward.common.tuning`` (the deep model's trials use the
  same sampler, so the budgets are equal by construction),
* fits each on the site's training split only, as the deep model trains on training rows only (no
  refit on train + tune: the comparison would otherwise favour the baselines with more rows),
* is chosen by tune-split AUROC (log-loss when the tune split has one class), and
* keeps the chosen model's test-split probabilities for the site's own metric panel.

Inputs are the rows after the run's frozen shared transform, so baselines see exactly the deep
model's features. Nothing here leaves the site: fitted models of the families that memorise rows
(kNN, SVM support vectors, random-forest leaves) are training rows in disguise, and the test
probabilities are per-patient. ``FamilyResult.public`` is the part a site may report.

Data problems never raise: a family that cannot be fitted is reported as failed, with a reason that
names counts but never row values (exception messages are left out for that reason: they can quote
data). Wrong arguments (unknown family, bad budget) are programming errors and raise ValueError.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, Protocol, cast

import numpy as np
from scipy.stats import loguniform
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from fedward.client import seeds
from fedward.common.evaluation_config import BASELINE_FAMILIES
from fedward.common.tuning import SEARCHES, Search, Space, sample_configurations

Status = Literal["ok", "failed"]

SELECTION_AUROC = "tune AUROC"
SELECTION_LOG_LOSS = "tune log-loss (tune split has one class)"

ONE_CLASS_REASON = "the training split has one class"

PLATT_FOLDS = 5
"""Folds of the SVM's Platt scaling, as libsvm's own; fewer when a class has fewer training rows."""


@dataclass(frozen=True)
class FamilyInfo:
    """What a report says about a family, and whether its fitted model may ever leave the site."""

    description: str
    memorises_rows: bool


FAMILY_INFO: Mapping[str, FamilyInfo] = MappingProxyType(
    {
        "logistic_regression": FamilyInfo(
            "L2-penalised logistic regression (lbfgs)", memorises_rows=False
        ),
        "random_forest": FamilyInfo(
            "random forest; its leaves can hold single training rows", memorises_rows=True
        ),
        "knn": FamilyInfo("k nearest neighbours; the model is the training rows", True),
        "naive_bayes": FamilyInfo("Gaussian naive Bayes (per-class means and variances)", False),
        "svm": FamilyInfo(
            "support vector machine with Platt-scaled probabilities; keeps its support vectors",
            memorises_rows=True,
        ),
        "hist_gradient_boosting": FamilyInfo(
            "histogram gradient-boosted trees (LightGBM-style)", memorises_rows=False
        ),
    }
)
"""Per family (the wire and report key): a one-line description and whether it memorises rows."""

FAMILIES: tuple[str, ...] = BASELINE_FAMILIES  # the run config's names, in its order
if set(FAMILIES) != set(FAMILY_INFO):
    raise ImportError("client.baselines must describe exactly the run config's baseline families")

# Search spaces for small tabular clinical data (tens to a few thousand rows, tens of features).
# Tree counts and boosting iterations are capped so a site of a few hundred rows tunes all six
# families at budget 20 in seconds on one core.
SPACES: Mapping[str, Space] = MappingProxyType(
    {
        "logistic_regression": {
            "C": loguniform(1e-3, 1e2),
            "class_weight": [None, "balanced"],
        },
        "random_forest": {
            "n_estimators": [50, 100, 200],
            "max_depth": [None, 3, 5, 8, 12],
            "min_samples_leaf": [1, 2, 5, 10],
            "max_features": ["sqrt", 0.5, 1.0],
            "class_weight": [None, "balanced"],
        },
        "knn": {
            "n_neighbors": [1, 3, 5, 7, 9, 15, 21, 31, 51],
            "weights": ["uniform", "distance"],
            "p": [1, 2],
        },
        "naive_bayes": {
            "var_smoothing": loguniform(1e-12, 1e-1),
        },
        "svm": {
            "C": loguniform(1e-2, 1e2),
            "kernel": ["rbf", "linear"],
            "gamma": ["scale", 0.001, 0.01, 0.1, 1.0],
            "class_weight": [None, "balanced"],
        },
        "hist_gradient_boosting": {
            "learning_rate": loguniform(1e-2, 3e-1),
            "max_iter": [50, 100, 200],
            "max_leaf_nodes": [7, 15, 31],
            "max_depth": [None, 3, 5],
            "min_samples_leaf": [5, 10, 20],
            "l2_regularization": [0.0, 0.1, 1.0],
            "class_weight": [None, "balanced"],
        },
    }
)
"""Per family, the hyperparameters searched: lists, or scipy.stats distributions (random search)."""


class Classifier(Protocol):
    """The part of a scikit-learn classifier the suite uses."""

    classes_: np.ndarray

    def fit(self, x: np.ndarray, y: np.ndarray) -> Any: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class FamilyResult:
    """One family's search at one site; ``public()`` is what may be reported beyond it."""

    family: str
    status: Status
    reason: str | None
    params: dict[str, Any] | None
    n_configurations: int
    n_failed: int
    tune_auroc: float | None
    fit_seconds: float
    memorises_rows: bool
    test_scores: np.ndarray | None = field(default=None, repr=False)
    selection: str | None = None
    """How the configuration was chosen: ``SELECTION_AUROC`` or ``SELECTION_LOG_LOSS``."""
    tune_log_loss: float | None = None
    n_not_converged: int = 0
    budget: int = 0
    search: str = "random"

    def public(self) -> dict[str, Any]:
        """Every field but the test scores (per-patient), as JSON-able values."""
        return {
            "family": self.family,
            "status": self.status,
            "reason": self.reason,
            "params": self.params,
            "selection": self.selection,
            "budget": self.budget,
            "search": self.search,
            "n_configurations": self.n_configurations,
            "n_failed": self.n_failed,
            "n_not_converged": self.n_not_converged,
            "tune_auroc": self.tune_auroc,
            "tune_log_loss": self.tune_log_loss,
            "fit_seconds": round(self.fit_seconds, 4),
            "memorises_rows": self.memorises_rows,
        }


class _Unfit(Exception):
    """A configuration that cannot be fitted to these rows; the reason is safe to report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def derive_seed(seed: int, *parts: object) -> int:
    """A 32-bit seed from the run seed and names, in the baselines' own domain (the platform's
    one derivation, ``fedward.client.seeds``)."""
    return seeds.derive_seed(seed, *parts, domain="fedward-baselines")


# ---- estimators ------------------------------------------------------------------------------


def _logistic(params: dict[str, Any], random_state: int, y: np.ndarray) -> Classifier:
    return cast(Classifier, LogisticRegression(max_iter=1000, random_state=random_state, **params))


def _random_forest(params: dict[str, Any], random_state: int, y: np.ndarray) -> Classifier:
    return cast(Classifier, RandomForestClassifier(n_jobs=1, random_state=random_state, **params))


def _knn(params: dict[str, Any], random_state: int, y: np.ndarray) -> Classifier:
    k = int(params["n_neighbors"])
    if k > y.size:
        raise _Unfit(f"n_neighbors = {k} exceeds the {y.size} training rows")
    return cast(Classifier, KNeighborsClassifier(n_jobs=1, **params))


def _naive_bayes(params: dict[str, Any], random_state: int, y: np.ndarray) -> Classifier:
    return cast(Classifier, GaussianNB(**params))


def _svm(params: dict[str, Any], random_state: int, y: np.ndarray) -> Classifier:
    # Platt scaling on cross-validated decision values, the documented replacement for
    # SVC(probability=True) (deprecated in scikit-learn 1.9): the same sigmoid, fitted on 5 folds.
    smaller = int(min((y == 0).sum(), (y == 1).sum()))
    if smaller < 2:
        raise _Unfit(
            "Platt scaling's cross-validation needs at least 2 training rows of each class "
            f"(the smaller class has {smaller})"
        )
    svc = SVC(random_state=random_state, **params)
    return cast(
        Classifier,
        CalibratedClassifierCV(
            svc, method="sigmoid", cv=min(PLATT_FOLDS, smaller), ensemble=False, n_jobs=1
        ),
    )


def _hist_gradient_boosting(params: dict[str, Any], random_state: int, y: np.ndarray) -> Classifier:
    # No early stopping: it would hold out part of the training split only above 10,000 rows
    # ("auto"), so small and large sites would be tuned differently.
    return cast(
        Classifier,
        HistGradientBoostingClassifier(early_stopping=False, random_state=random_state, **params),
    )


_BUILDERS: Mapping[str, Callable[[dict[str, Any], int, np.ndarray], Classifier]] = {
    "logistic_regression": _logistic,
    "random_forest": _random_forest,
    "knn": _knn,
    "naive_bayes": _naive_bayes,
    "svm": _svm,
    "hist_gradient_boosting": _hist_gradient_boosting,
}


# ---- the suite -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_tune: np.ndarray
    y_tune: np.ndarray
    x_test: np.ndarray


def run_suite(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_tune: np.ndarray,
    y_tune: np.ndarray,
    x_test: np.ndarray,
    *,
    families: Sequence[str] = FAMILIES,
    budget: int = 20,
    search: str = "random",
    seed: int,
) -> list[FamilyResult]:
    """Tune every family with ``budget`` configurations on train/tune; score the chosen on test.

    Results come in the order of ``families``. Each family's configurations and estimator seed are
    derived from ``seed`` and the family's name, so a family's result does not depend on which
    other families run. Runs on one thread (BLAS and OpenMP included): a site process gets one CPU.
    """
    names = _check_arguments(families, budget, search)
    data, problem = _checked_data(x_train, y_train, x_tune, y_tune, x_test)
    if data is None:
        return [
            _failed(family, problem, budget=budget, search=search, n_configurations=0, seconds=0.0)
            for family in names
        ]
    with threadpool_limits(limits=1):
        return [
            _run_family(family, data, budget=budget, search=cast(Search, search), seed=seed)
            for family in names
        ]


def _check_arguments(families: Sequence[str], budget: int, search: str) -> list[str]:
    names = [families] if isinstance(families, str) else list(families)
    unknown = [f for f in names if f not in FAMILY_INFO]
    if unknown:
        raise ValueError(
            f"unknown baseline families {', '.join(map(repr, unknown))}; one of {', '.join(FAMILIES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError("each baseline family may be named only once")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"the tuning budget must be a positive integer, got {budget!r}")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    return names


def _checked_data(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_tune: np.ndarray,
    y_tune: np.ndarray,
    x_test: np.ndarray,
) -> tuple[_Data | None, str]:
    """The splits as float/int arrays, or None and why the suite cannot run on them."""
    xs: dict[str, np.ndarray] = {}
    for name, x in (("training", x_train), ("tune", x_tune), ("test", x_test)):
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            return None, f"the {name} features are not numeric"
        if arr.ndim != 2:
            return None, f"the {name} features must be a 2-D matrix, got {arr.ndim} dimension(s)"
        if not np.isfinite(arr).all():
            return None, f"the {name} features hold missing or infinite values"
        xs[name] = arr
    widths = {arr.shape[1] for arr in xs.values()}
    if len(widths) != 1:
        return None, "the splits have different numbers of features"
    ys: dict[str, np.ndarray] = {}
    for name, y in (("training", y_train), ("tune", y_tune)):
        arr = np.asarray(y).reshape(-1)
        if arr.size != xs[name].shape[0]:
            return None, f"the {name} split has {xs[name].shape[0]} rows but {arr.size} labels"
        if arr.size and not np.isin(arr, (0, 1)).all():
            return None, f"the {name} labels must be 0 and 1"
        ys[name] = arr.astype(np.int64)
    if ys["training"].size == 0:
        return None, "the training split is empty"
    if np.unique(ys["training"]).size < 2:
        return None, ONE_CLASS_REASON
    if ys["tune"].size == 0:
        return None, "the tune split is empty, so configurations cannot be compared"
    return (
        _Data(xs["training"], ys["training"], xs["tune"], ys["tune"], xs["test"]),
        "",
    )


def _failed(
    family: str, reason: str, *, budget: int, search: str, n_configurations: int, seconds: float
) -> FamilyResult:
    return FamilyResult(
        family=family,
        status="failed",
        reason=reason,
        params=None,
        n_configurations=n_configurations,
        n_failed=n_configurations,
        tune_auroc=None,
        fit_seconds=seconds,
        memorises_rows=FAMILY_INFO[family].memorises_rows,
        budget=budget,
        search=search,
    )


def _positive_proba(model: Classifier, x: np.ndarray) -> np.ndarray:
    classes = list(np.asarray(model.classes_).tolist())
    p = np.asarray(model.predict_proba(x), dtype=np.float64)[:, classes.index(1)]
    if not np.isfinite(p).all():
        raise _Unfit("the model gave non-finite probabilities")
    return np.clip(p, 0.0, 1.0)


@dataclass
class _Best:
    score: float
    params: dict[str, Any]
    model: Classifier
    auroc: float | None
    log_loss: float


def _run_family(
    family: str, data: _Data, *, budget: int, search: Search, seed: int
) -> FamilyResult:
    configs = sample_configurations(
        SPACES[family], budget, search=search, seed=derive_seed(seed, family, "search")
    )
    random_state = derive_seed(seed, family, "estimator")
    by_auroc = np.unique(data.y_tune).size == 2
    failures: Counter[str] = Counter()
    not_converged = 0
    best: _Best | None = None
    started = time.perf_counter()
    for params in configs:
        try:
            model = _BUILDERS[family](dict(params), random_state, data.y_train)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(data.x_train, data.y_train)
                p = _positive_proba(model, data.x_tune)
            not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        except _Unfit as exc:
            failures[exc.reason] += 1
            continue
        except Exception as exc:  # any estimator error is this configuration's failure
            failures[f"{type(exc).__name__} while fitting"] += 1
            continue
        loss = float(log_loss(data.y_tune, p, labels=[0, 1]))
        auroc = float(roc_auc_score(data.y_tune, p)) if by_auroc else None
        score = auroc if auroc is not None else -loss
        if best is None or score > best.score:  # ties: the first configuration tried
            best = _Best(score, params, model, auroc, loss)
    seconds = time.perf_counter() - started
    failed = partial(
        _failed,
        family,
        budget=budget,
        search=search,
        n_configurations=len(configs),
        seconds=seconds,
    )
    if best is None:
        common = "; ".join(f"{reason} ({n}×)" for reason, n in failures.most_common(2))
        result = failed(f"all {len(configs)} configurations failed: {common}")
        result.n_not_converged = not_converged
        return result
    test_scores = np.zeros(0, dtype=np.float64)
    if data.x_test.shape[0]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                test_scores = _positive_proba(best.model, data.x_test)
        except Exception as exc:
            reason = exc.reason if isinstance(exc, _Unfit) else type(exc).__name__
            result = failed(f"the chosen configuration failed on the test split: {reason}")
            result.n_failed = sum(failures.values())
            return result
    return FamilyResult(
        family=family,
        status="ok",
        reason=None,
        params=best.params,
        n_configurations=len(configs),
        n_failed=sum(failures.values()),
        tune_auroc=best.auroc,
        fit_seconds=seconds,
        memorises_rows=FAMILY_INFO[family].memorises_rows,
        test_scores=test_scores,
        selection=SELECTION_AUROC if by_auroc else SELECTION_LOG_LOSS,
        tune_log_loss=best.log_loss if math.isfinite(best.log_loss) else None,
        n_not_converged=not_converged,
        budget=budget,
        search=search,
    )
