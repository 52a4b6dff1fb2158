"""The baseline suite a site runs on its own splits, with the deep model's tuning budget."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

from fedward.client.baselines import (
    FAMILIES,
    FAMILY_INFO,
    ONE_CLASS_REASON,
    SELECTION_AUROC,
    SELECTION_LOG_LOSS,
    SPACES,
    derive_seed,
    run_suite,
)
from fedward.common.tuning import sample_configurations

Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def separable() -> Splits:
    x, y = make_classification(
        n_samples=260,
        n_features=8,
        n_informative=4,
        n_redundant=0,
        n_clusters_per_class=1,
        class_sep=2.0,
        flip_y=0.0,
        random_state=0,
    )
    x = (x / np.abs(x).max()).astype(np.float32)  # like the shared transform: about [-1, 1]
    return x[:160], y[:160], x[160:210], y[160:210], x[210:], y[210:]


def test_family_table_says_which_models_memorise_rows() -> None:
    assert FAMILIES == (
        "logistic_regression",
        "random_forest",
        "knn",
        "naive_bayes",
        "svm",
        "hist_gradient_boosting",
    )
    memorising = {name for name, info in FAMILY_INFO.items() if info.memorises_rows}
    assert memorising == {"knn", "svm", "random_forest"}
    assert all(info.description for info in FAMILY_INFO.values())


def test_every_family_tunes_well_on_separable_data(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, y_te = separable
    results = run_suite(x_tr, y_tr, x_tu, y_tu, x_te, budget=4, seed=0)
    assert [r.family for r in results] == list(FAMILIES)
    for r in results:
        assert r.status == "ok", (r.family, r.reason)
        assert r.selection == SELECTION_AUROC
        assert r.tune_auroc is not None and r.tune_auroc > 0.8, r.family
        assert r.test_scores is not None and r.test_scores.shape == (x_te.shape[0],)
        assert ((r.test_scores >= 0) & (r.test_scores <= 1)).all()
        assert roc_auc_score(y_te, r.test_scores) > 0.8, r.family
        assert r.memorises_rows == FAMILY_INFO[r.family].memorises_rows


def test_every_family_gets_the_same_budget(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    results = run_suite(x_tr, y_tr, x_tu, y_tu, x_te, budget=3, seed=1)
    assert {(r.budget, r.n_configurations, r.search) for r in results} == {(3, 3, "random")}


def test_grid_search_is_recorded(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    (r,) = run_suite(
        x_tr, y_tr, x_tu, y_tu, x_te, families=["knn"], budget=5, search="grid", seed=0
    )
    assert (r.search, r.n_configurations) == ("grid", 5)


def test_the_configuration_with_the_best_tune_auroc_is_chosen() -> None:
    x, y = make_classification(
        n_samples=300, n_features=6, n_informative=3, class_sep=0.6, flip_y=0.1, random_state=3
    )
    x_tr, y_tr, x_tu, y_tu = x[:150], y[:150], x[150:230], y[150:230]
    (r,) = run_suite(x_tr, y_tr, x_tu, y_tu, x[230:], families=["knn"], budget=36, seed=0)
    aurocs = [
        roc_auc_score(y_tu, KNeighborsClassifier(**c).fit(x_tr, y_tr).predict_proba(x_tu)[:, 1])
        for c in sample_configurations(SPACES["knn"], 36, search="grid", seed=0)
    ]  # budget 36 is the whole kNN grid, so the suite tried exactly these
    assert len(set(aurocs)) > 5  # the configurations really differ on this data
    assert r.tune_auroc == pytest.approx(max(aurocs))


def test_the_chosen_model_is_fitted_on_the_training_split_only(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    (r,) = run_suite(
        x_tr, y_tr, x_tu, y_tu, x_te, families=["logistic_regression"], budget=5, seed=2
    )
    assert r.params is not None and r.test_scores is not None
    refit = LogisticRegression(
        max_iter=1000, random_state=derive_seed(2, "logistic_regression", "estimator"), **r.params
    ).fit(x_tr.astype(np.float64), y_tr)
    np.testing.assert_allclose(r.test_scores, refit.predict_proba(x_te.astype(np.float64))[:, 1])


def test_a_family_does_not_depend_on_which_others_run(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    alone = run_suite(x_tr, y_tr, x_tu, y_tu, x_te, families=["random_forest"], budget=3, seed=5)
    together = run_suite(
        x_tr, y_tr, x_tu, y_tu, x_te, families=["knn", "random_forest"], budget=3, seed=5
    )
    assert alone[0].params == together[1].params
    np.testing.assert_array_equal(alone[0].test_scores, together[1].test_scores)


def test_public_results_hold_no_test_scores_and_are_json(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    for r in run_suite(x_tr, y_tr, x_tu, y_tu, x_te, budget=2, seed=0):
        public = r.public()
        assert "test_scores" not in public
        assert json.loads(json.dumps(public)) == public
        assert not any(isinstance(v, np.ndarray) for v in public.values())


def test_a_one_class_training_split_fails_every_family_without_raising(
    separable: Splits,
) -> None:
    x_tr, _, x_tu, y_tu, x_te, _ = separable
    results = run_suite(x_tr, np.ones(len(x_tr)), x_tu, y_tu, x_te, budget=3, seed=0)
    assert [r.family for r in results] == list(FAMILIES)
    for r in results:
        assert (r.status, r.reason) == ("failed", ONE_CLASS_REASON)
        assert r.test_scores is None and r.params is None


def test_knn_with_five_training_rows_counts_its_failing_configurations(
    separable: Splits,
) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    rows = np.r_[np.flatnonzero(y_tr == 0)[:3], np.flatnonzero(y_tr == 1)[:2]]
    # The whole kNN grid: 9 n_neighbors x 2 weights x 2 metrics; 6 of the n_neighbors exceed 5.
    (r,) = run_suite(
        x_tr[rows], y_tr[rows], x_tu, y_tu, x_te, families=["knn"], budget=36, search="grid", seed=0
    )
    assert r.status == "ok"
    assert (r.n_configurations, r.n_failed) == (36, 24)
    assert r.params is not None and r.params["n_neighbors"] <= 5


def test_svm_without_enough_rows_per_class_fails_with_a_reason(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    rows = np.r_[np.flatnonzero(y_tr == 0)[:20], np.flatnonzero(y_tr == 1)[:1]]
    (r,) = run_suite(x_tr[rows], y_tr[rows], x_tu, y_tu, x_te, families=["svm"], budget=4, seed=0)
    assert r.status == "failed"
    assert r.n_failed == r.n_configurations == 4
    assert r.reason is not None
    assert r.reason.startswith("all 4 configurations failed")
    assert "at least 2 training rows of each class" in r.reason


def test_a_one_class_tune_split_chooses_by_log_loss(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    neg = y_tu == 0
    results = run_suite(
        x_tr,
        y_tr,
        x_tu[neg],
        y_tu[neg],
        x_te,
        families=["logistic_regression", "knn"],
        budget=3,
        seed=0,
    )
    for r in results:
        assert r.status == "ok"
        assert r.selection == SELECTION_LOG_LOSS
        assert r.tune_auroc is None and r.tune_log_loss is not None


def test_missing_feature_values_fail_every_family(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    x_bad = x_tr.copy()
    x_bad[0, 0] = np.nan
    results = run_suite(x_bad, y_tr, x_tu, y_tu, x_te, families=["naive_bayes"], budget=2, seed=0)
    assert results[0].status == "failed"
    assert results[0].reason == "the training features hold missing or infinite values"


def test_an_empty_test_split_gives_empty_scores(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    (r,) = run_suite(x_tr, y_tr, x_tu, y_tu, x_te[:0], families=["naive_bayes"], budget=2, seed=0)
    assert r.status == "ok"
    assert r.test_scores is not None and r.test_scores.shape == (0,)


def test_results_are_deterministic_for_a_seed(separable: Splits) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    fams = ["random_forest", "hist_gradient_boosting", "svm"]
    a = run_suite(x_tr, y_tr, x_tu, y_tu, x_te, families=fams, budget=2, seed=9)
    b = run_suite(x_tr, y_tr, x_tu, y_tu, x_te, families=fams, budget=2, seed=9)
    for ra, rb in zip(a, b, strict=True):
        assert ra.params == rb.params
        np.testing.assert_array_equal(ra.test_scores, rb.test_scores)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"families": ["xgboost"]}, "unknown baseline families"),
        ({"families": ["knn", "knn"]}, "only once"),
        ({"budget": 0}, "budget"),
        ({"search": "bayes"}, "search"),
    ],
)
def test_wrong_arguments_raise(separable: Splits, kwargs: dict[str, Any], match: str) -> None:
    x_tr, y_tr, x_tu, y_tu, x_te, _ = separable
    with pytest.raises(ValueError, match=match):
        run_suite(x_tr, y_tr, x_tu, y_tu, x_te, seed=0, **kwargs)


def test_baseline_seeds_keep_the_values_of_their_former_own_derivation() -> None:
    # Computed with baselines.py's own SHA-256 derivation before it became common.seeds'.
    assert derive_seed(2, "logistic_regression", "estimator") == 3852143235
    assert derive_seed(0, "pooled", "noise") == 3104790515
