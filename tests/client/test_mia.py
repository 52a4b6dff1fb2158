"""Membership-inference audits: the statistics are right, the attacks find what is there and only
what is there, the canary bound is sound, and nothing but aggregates can leave."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, RecordDict
from scipy import stats
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score

from fedward.client.accounting import plan_noise_multiplier
from fedward.client.canary_bound import (
    canary_epsilon_max,
    canary_guess_grid,
    one_run_audit,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from fedward.client.egress_guard import EgressGuard, EgressPolicy
from fedward.client.mia import SiteAudit, audit_site, public_keys
from fedward.client.mia_attacks import (
    TrainFn,
    derive_audit_seed,
    lira_from_confidences,
    logit_confidence,
    reference_split,
)
from fedward.client.mia_roc import auc_delong, clopper_pearson, roc_summary
from fedward.client.training import DPSettings, predict_logits, train_local
from fedward.common.audit_keys import ATTACKS, PUBLIC_KEYS
from fedward.common.learning_config import ModelConfig, TrainingConfig
from fedward.common.models import build_model
from fedward.common.score_histograms import CoarseHistogram

DELTA = 1e-5

# ---- scores -----------------------------------------------------------------------------------


def test_logit_confidence_is_the_logit_of_the_true_labels_probability() -> None:
    z = np.array([2.0, 2.0, -3.0, 0.0])
    y = np.array([1, 0, 0, 1])
    phi = logit_confidence(z, y)
    np.testing.assert_allclose(phi, [2.0, -2.0, 3.0, 0.0])
    p_true = np.where(y == 1, 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(z)))
    np.testing.assert_allclose(phi, np.log(p_true / (1 - p_true)))


# ---- ROC summary ------------------------------------------------------------------------------


def _constructed() -> tuple[np.ndarray, np.ndarray]:
    """1000 non-members scored 0..999; members placed between chosen non-member scores."""
    non = np.arange(1000, dtype=float)
    members = np.r_[
        np.full(70, 5000.0),  # above every non-member: found at FPR 0.1% (1 FP allowed)
        np.full(30, 995.5),  # above all but 4 non-members: found at FPR 1% (10 FPs allowed)
        np.full(50, 950.5),  # above all but 49 non-members: found at FPR 10%
        np.full(50, 10.5),  # below almost every non-member
    ]
    scores = np.r_[members, non]
    return scores, np.r_[np.ones(members.size, bool), np.zeros(non.size, bool)]


def test_tpr_at_each_fpr_is_the_best_tpr_with_at_most_that_many_false_positives() -> None:
    scores, member = _constructed()
    roc = roc_summary(scores, member, confidence=0.95)
    assert roc.tpr(0.001).tpr == pytest.approx(70 / 200)
    assert roc.tpr(0.01).tpr == pytest.approx(100 / 200)
    assert roc.tpr(0.1).tpr == pytest.approx(150 / 200)
    assert all(t.supported for t in roc.tpr_at_fpr)


def test_tpr_intervals_are_exact_clopper_pearson() -> None:
    scores, member = _constructed()
    roc = roc_summary(scores, member, confidence=0.9)
    for t, hits in ((roc.tpr(0.001), 70), (roc.tpr(0.01), 100), (roc.tpr(0.1), 150)):
        ci = stats.binomtest(hits, 200).proportion_ci(confidence_level=0.9, method="exact")
        assert (t.lo, t.hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert clopper_pearson(0, 50, 0.95)[0] == 0.0 and clopper_pearson(50, 50, 0.95)[1] == 1.0
    assert clopper_pearson(0, 50, 0.95)[1] == pytest.approx(1 - 0.025 ** (1 / 50))


def test_auc_counts_ties_as_one_half_and_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 300).astype(float)  # many ties
    member = rng.random(300) < 0.4
    auc, lo, hi = auc_delong(scores, member, confidence=0.95)
    assert auc == pytest.approx(roc_auc_score(member, scores))
    assert lo is not None and hi is not None and lo < auc < hi


def test_delong_variance_matches_the_placement_values_computed_pair_by_pair() -> None:
    rng = np.random.default_rng(4)
    pos, neg = rng.normal(0.7, 1, 40).round(1), rng.normal(0, 1, 60).round(1)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    se = math.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)
    z = stats.norm.ppf(0.975)
    logit = math.log(auc / (1 - auc))
    half = z * se / (auc * (1 - auc))
    expected = (1 / (1 + math.exp(-(logit - half))), 1 / (1 + math.exp(-(logit + half))))
    got = auc_delong(np.r_[pos, neg], np.r_[np.ones(40, bool), np.zeros(60, bool)], confidence=0.95)
    assert got[0] == pytest.approx(auc)
    assert got[1:] == pytest.approx(expected)


def test_auc_interval_covers_the_true_auc_about_as_often_as_stated() -> None:
    rng = np.random.default_rng(5)
    shift = 0.8
    true_auc = stats.norm.cdf(shift / math.sqrt(2))
    member = np.r_[np.ones(80, bool), np.zeros(120, bool)]
    covered = 0
    for _ in range(400):
        scores = np.r_[rng.normal(shift, 1, 80), rng.normal(0, 1, 120)]
        _, lo, hi = auc_delong(scores, member, confidence=0.95)
        assert lo is not None and hi is not None
        covered += lo <= true_auc <= hi
    assert 0.91 <= covered / 400 <= 0.98


def test_advantage_is_the_largest_tpr_minus_fpr_over_thresholds() -> None:
    rng = np.random.default_rng(6)
    scores = rng.normal(0, 1, 300).round(1)
    member = rng.random(300) < 0.5
    scores[member] += 0.5
    brute = max(
        (scores[member] >= t).mean() - (scores[~member] >= t).mean() for t in np.unique(scores)
    )
    assert roc_summary(scores, member).advantage == pytest.approx(max(brute, 0.0))


def test_fpr_levels_the_site_is_too_small_for_are_none() -> None:
    rng = np.random.default_rng(7)
    scores = rng.normal(0, 1, 350)
    member = np.r_[np.ones(200, bool), np.zeros(150, bool)]
    roc = roc_summary(scores, member)
    assert roc.tpr(0.1).supported and roc.tpr(0.01).supported
    tiny = roc.tpr(0.001)
    assert not tiny.supported and tiny.tpr is None and tiny.lo is None
    assert tiny.nonmembers_needed == 1000


def test_the_rank_histogram_counts_every_member_and_non_member_once() -> None:
    scores, member = _constructed()
    roc = roc_summary(scores, member, bins=20)
    assert sum(roc.histogram.pos_counts) == 200 and sum(roc.histogram.neg_counts) == 1000
    assert roc.histogram.pos_counts[-1] >= 70  # the members above every non-member rank last
    coarse = roc.coarse_histogram(25)
    assert all(c == 0 or c >= 25 for _, c in coarse.pos_groups + coarse.neg_groups)


# ---- the one-run bound ------------------------------------------------------------------------


def _exact_tails(r: int, v: int, epsilons: np.ndarray) -> np.ndarray:
    """P[Binomial(r, e^ε/(1+e^ε)) ≥ v] for each ε, summing the binomial terms one by one."""
    q = np.exp(epsilons) / (1 + np.exp(epsilons))
    return np.asarray(
        sum(math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(v, r + 1)), dtype=float
    )


def _brute_force_bound(r: int, v: int, significance: float) -> float:
    """The largest ε on a 0.0005 grid whose pure-DP tail is still at most ``significance``."""
    grid = np.arange(0.0, 8.0, 0.0005)
    rejected = grid[_exact_tails(r, v, grid) <= significance]
    return float(rejected.max()) if rejected.size else 0.0


def test_no_correct_guess_gives_a_bound_of_zero() -> None:
    assert one_run_epsilon_lower_bound(100, 20, 0, DELTA, 0.05) == 0.0
    scores = np.r_[np.zeros(50), np.ones(50)]
    included = np.r_[np.ones(50, bool), np.zeros(50, bool)]  # every guess wrong
    audit = one_run_audit(scores, included, delta=DELTA)
    assert audit.correct == 0 and audit.epsilon_lb == 0.0


def test_all_guesses_correct_bound_grows_with_the_number_of_guesses() -> None:
    bounds = [one_run_epsilon_lower_bound(1000, r, r, DELTA, 0.01) for r in (10, 20, 50, 100, 400)]
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert bounds[0] > 0


@pytest.mark.parametrize(("r", "v"), [(10, 10), (20, 18), (40, 30), (60, 45)])
def test_pure_dp_bound_matches_a_brute_force_binomial_computation(r: int, v: int) -> None:
    epsilons = np.array([0.0, 0.5, 1.3, 3.0])
    for eps, tail in zip(epsilons, _exact_tails(r, v, epsilons), strict=True):
        assert one_run_p_value(100, r, v, float(eps), 0.0) == pytest.approx(tail, rel=1e-9)
    got = one_run_epsilon_lower_bound(100, r, v, 0.0, 0.05)
    assert got == pytest.approx(_brute_force_bound(r, v, 0.05), abs=1e-3)


def test_delta_term_is_the_papers_and_only_weakens_the_bound() -> None:
    m, r, v, eps, delta = 500, 60, 50, 1.0, 1e-3
    q = math.exp(eps) / (1 + math.exp(eps))
    tail = stats.binom.sf(v - 1, r, q)
    worst = max(
        (stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - i - 1, r, q)) / i
        for i in range(1, v + 1)
    )
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(tail + 2 * m * delta * worst)
    assert one_run_epsilon_lower_bound(m, r, v, delta, 0.05) < one_run_epsilon_lower_bound(
        m, r, v, 0.0, 0.05
    )


def test_the_bound_never_exceeds_the_largest_epsilon_the_audit_can_show() -> None:
    rng = np.random.default_rng(8)
    for m in (20, 57, 200):
        included = rng.permutation(m) < m // 2  # balanced, so every guess can be right
        for strength in (0.0, 1.0, 5.0, 100.0):
            scores = strength * included + rng.normal(0, 1, m)
            audit = one_run_audit(scores, included, delta=DELTA, rng=rng)
            assert 0.0 <= audit.epsilon_lb <= audit.epsilon_max
        perfect = one_run_audit(included.astype(float), included, delta=DELTA)
        assert perfect.correct == perfect.guesses
        assert perfect.epsilon_lb == pytest.approx(perfect.epsilon_max)
        assert perfect.epsilon_max == pytest.approx(canary_epsilon_max(m, DELTA, 0.95))


def test_the_chosen_k_is_paid_for_over_the_whole_grid() -> None:
    rng = np.random.default_rng(9)
    included = rng.random(300) < 0.5
    audit = one_run_audit(2.0 * included + rng.normal(0, 1, 300), included, delta=DELTA)
    grid = canary_guess_grid(300, DELTA, 0.95)
    assert audit.grid == grid and len(grid) > 1 and audit.guesses in grid
    split = one_run_epsilon_lower_bound(300, audit.guesses, audit.correct, DELTA, 0.05 / len(grid))
    unsplit = one_run_epsilon_lower_bound(300, audit.guesses, audit.correct, DELTA, 0.05)
    assert audit.epsilon_lb == pytest.approx(split) and audit.epsilon_lb < unsplit


def test_the_bound_rarely_exceeds_zero_when_scores_carry_no_membership() -> None:
    rng = np.random.default_rng(10)
    positive = 0
    for _ in range(100):
        included = rng.random(100) < 0.5
        positive += one_run_audit(rng.normal(0, 1, 100), included, delta=DELTA).epsilon_lb > 0
    assert positive <= 10  # at most 5% expected


# ---- LiRA -------------------------------------------------------------------------------------


def test_reference_split_puts_every_row_in_half_of_the_models() -> None:
    inside = reference_split(500, 6, np.random.default_rng(0))
    assert (inside.sum(axis=0) == 3).all()
    assert 200 < inside[0].sum() < 300  # each model sees about half the pool


def _lira_world(n: int = 600, r: int = 8, seed: int = 11) -> tuple[np.ndarray, ...]:
    """Rows of very different difficulty; membership shifts φ by 2 for that row."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 6, n)
    inside = reference_split(n, r, rng)
    reference = difficulty + 2.0 * inside + rng.normal(0, 1, (r, n))
    member = rng.random(n) < 0.5
    target = difficulty + 2.0 * member + rng.normal(0, 1, n)
    return target, reference, inside, member


def test_lira_calibrates_per_row_difficulty_the_loss_attack_cannot() -> None:
    target, reference, inside, member = _lira_world()
    lira = lira_from_confidences(target, reference, inside)
    assert lira.online is not None and lira.global_variance
    loss_auc = roc_summary(target, member).auc
    offline_auc = roc_summary(lira.offline, member).auc
    online_auc = roc_summary(lira.online, member).auc
    assert loss_auc < 0.65
    assert offline_auc > 0.8 and online_auc > 0.85
    assert online_auc == pytest.approx(stats.norm.cdf(2 / math.sqrt(2)), abs=0.06)


def test_lira_without_in_models_is_offline_only() -> None:
    target, reference, _, _ = _lira_world()
    lira = lira_from_confidences(target, reference, np.zeros(reference.shape, bool))
    assert lira.online is None and np.isfinite(lira.offline).all()


def test_lira_with_many_reference_models_fits_per_row_variances() -> None:
    target, reference, inside, _ = _lira_world(n=100, r=64)
    assert not lira_from_confidences(target, reference, inside).global_variance


# ---- the site's audit: bad input, public output -----------------------------------------------


def _fixed_logits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)[:, 0] * 2.0


def _linear_train_fn(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """A least-squares 'model', enough to exercise the pipeline without torch."""
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(a, 2.0 * y - 1.0, rcond=None)[0]
    return lambda rows: 4.0 * (np.c_[rows, np.ones(len(rows))] @ w)


def _failing_train_fn(
    x: np.ndarray, y: np.ndarray, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    raise RuntimeError(f"row {x[0]} broke")  # the message quotes data: it must not be reported


def _rows(n: int, seed: int = 0, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, d))
    return x, (x[:, 0] + rng.normal(0, 1, n) > 0).astype(np.int64)


def _audit(
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    train_fn: TrainFn = _linear_train_fn,
    **kwargs: Any,
) -> SiteAudit:
    options: dict[str, Any] = {"epsilon_claimed": 1.0, "delta": DELTA, "seed": 0}
    options.update(kwargs)
    return audit_site(_fixed_logits, train_fn, *members, *nonmembers, **options)


def test_a_full_audit_runs_every_attack_and_the_canary_audit() -> None:
    audit = _audit(_rows(400), _rows(300, seed=1), n_reference=4)
    assert set(audit.attacks) == set(ATTACKS) and audit.n_reference == 4
    # 350 flipped copies of real rows (half the pool) and 400 synthetic canaries (one per member).
    assert audit.canary is not None and audit.canary.m == 750 and audit.canary.n_synthetic == 400
    assert audit.seconds["total"] >= audit.seconds["reference"] + audit.seconds["canary"]


@pytest.mark.parametrize(
    ("members", "nonmembers", "expected"),
    [
        (_rows(200), (np.zeros((0, 4)), np.zeros(0)), "non-members"),
        ((_rows(200)[0], np.ones(200)), (_rows(100)[0], np.ones(100)), "one class"),
        (_rows(8), _rows(6, seed=1), "canary audit is skipped"),
        ((np.full((50, 4), np.nan), np.ones(50)), _rows(50), "missing or infinite"),
        ((_rows(50)[0], np.ones(49)), _rows(50), "labels for 50 feature rows"),
        ((_rows(50)[0], np.full(50, 2)), _rows(50), "labels must be 0 and 1"),
        (_rows(50), (_rows(50)[0][:, :3], _rows(50)[1]), "different numbers of features"),
        ((np.zeros((0, 4)), np.zeros(0)), _rows(50), "no training rows"),
    ],
)
def test_bad_input_never_raises_and_a_note_says_why(
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    expected: str,
) -> None:
    audit = _audit(members, nonmembers)
    assert any(expected in note for note in audit.notes), audit.notes
    json.dumps(audit.public())


def test_a_train_fn_that_fails_skips_its_part_and_names_only_the_error_type() -> None:
    audit = _audit(_rows(300), _rows(300, seed=1), train_fn=_failing_train_fn)
    assert set(audit.attacks) == {"loss"} and audit.canary is None
    text = " ".join(audit.notes)
    assert "RuntimeError" in text and "broke" not in text and "row" not in text.lower().split()


def test_unsupported_fpr_levels_are_named_with_the_count_needed_and_the_count_the_site_has() -> (
    None
):
    audit = _audit(_rows(300), _rows(150, seed=1), n_reference=0, n_canaries=0)
    assert (
        "TPR at FPR 0.1% is not reported: it needs at least 1000 non-members (audit rows) and "
        "this site has 150." in audit.notes
    )
    assert not any("FPR 1%" in n or "FPR 10%" in n for n in audit.notes)
    public = audit.public()
    assert public["mia_loss_tpr_at_fpr_0_1"] is None and public["mia_loss_tpr_at_fpr_1"] is not None


def test_counts_below_the_minimum_cell_are_never_written_out() -> None:
    audit = _audit(_rows(300), _rows(8, seed=1), n_reference=0, n_canaries=0, min_cell=10)
    public = audit.public()
    assert public["mia_n_nonmembers"] is None and public["mia_n_members"] == 300
    notes = public["mia_notes"]
    assert isinstance(notes, list)
    notes = cast(list[str], notes)  # the notes are sentences
    assert any("this site has fewer than 10" in n for n in notes)
    assert not any(" 8" in n or "8." in n for n in notes)
    assert public["mia_loss_hist_neg_counts"] == []  # the class is suppressed, not shown small


def test_a_small_site_says_what_its_canary_audit_cannot_show() -> None:
    audit = _audit(_rows(60), _rows(40, seed=1), n_reference=0, n_canaries=500, epsilon_claimed=8.0)
    assert audit.canary is not None and audit.canary.m == 110 and audit.canary.n_synthetic == 60
    eps_max = audit.canary.epsilon_max
    assert eps_max == pytest.approx(canary_epsilon_max(110, DELTA, 0.95)) and eps_max < 8.0
    assert any(
        n.startswith("500 canaries were asked for; this site's rows support at most 110")
        and n.endswith("so the audit uses 110.")
        for n in audit.notes
    ), audit.notes
    assert any(
        n.startswith(
            f"Minimum detectable leak: this canary audit could certify at most ε = {eps_max:.2f} "
            "(110 canaries, 60 synthetic, 95% confidence"
        )
        for n in audit.notes
    ), audit.notes
    assert any(f"at most ε ≥ {eps_max:.2f}" in n and "cannot refute" in n for n in audit.notes)
    assert audit.public()["mia_canary_epsilon_max"] == pytest.approx(eps_max, abs=1e-6)


def test_public_output_is_flat_aggregates_only_and_passes_the_egress_guard() -> None:
    audit = _audit(_rows(400), _rows(300, seed=1), n_reference=4, bins=20)
    public = audit.public(10)
    assert set(public) <= set(PUBLIC_KEYS) and public_keys() == PUBLIC_KEYS
    assert {f"mia_{a}_auc" for a in ATTACKS} <= set(public) and "mia_canary_epsilon_lb" in public
    json.dumps(public)
    for key, value in public.items():
        assert value is None or isinstance(value, int | float | str | bool | list), key
        if isinstance(value, list) and key not in ("mia_notes", "mia_attacks"):
            assert len(value) <= 20 and all(isinstance(v, int) for v in value), key
    for attack in ATTACKS:
        prefix = f"mia_{attack}_hist_"
        hist = CoarseHistogram.from_record(
            {k[len(prefix) :]: v for k, v in public.items() if k.startswith(prefix)}
        )
        pos, neg = hist.expand()
        assert pos.sum() == pytest.approx(400) and neg.sum() == pytest.approx(300)
    # What a ClientApp would send: the egress guard's own check, None values dropped.
    record = ConfigRecord({k: v for k, v in public.items() if v is not None})
    EgressGuard(EgressPolicy(min_cell_size=10)).check(RecordDict({"fedward": record}), site="a")


# ---- real training: overfit, DP, broken DP ----------------------------------------------------

N_MEMBERS, N_NONMEMBERS, N_FEATURES = 300, 500, 200
BATCH = 64
SAMPLE_RATE = BATCH / N_MEMBERS
MLP = ModelConfig(kind="mlp", hidden=[64, 64])
OVERFIT = TrainingConfig(local_epochs=50, batch_size=BATCH, learning_rate=1e-3, optimizer="adam")
DP_TRAINING = TrainingConfig(
    local_epochs=30, batch_size=BATCH, learning_rate=1e-3, optimizer="adam"
)


@pytest.fixture(scope="module")
def site_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Few rows, many features, noisy labels: a model that can, will memorise its members."""
    x, y = make_classification(
        n_samples=N_MEMBERS + N_NONMEMBERS,
        n_features=N_FEATURES,
        n_informative=5,
        n_redundant=0,
        flip_y=0.5,
        random_state=0,
    )
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x[:N_MEMBERS], y[:N_MEMBERS], x[N_MEMBERS:], y[N_MEMBERS:]


def torch_train_fn(cfg: TrainingConfig, noise_multiplier: float | None) -> TrainFn:
    """The site's training through ``train_local``; DP-SGD at a fixed sample rate when noised."""

    def train(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        model = build_model(MLP, x.shape[1], seed=seed)
        dp = None
        if noise_multiplier is not None:
            dp = DPSettings(
                noise_multiplier=noise_multiplier,
                max_grad_norm=1.0,
                sample_rate=SAMPLE_RATE,
                noise_seed=seed + 1,
            )
        xt = torch.as_tensor(x, dtype=torch.float32)
        train_local(model, xt, torch.as_tensor(y, dtype=torch.float32), cfg=cfg, dp=dp, seed=seed)
        return lambda rows: predict_logits(model, torch.as_tensor(rows, dtype=torch.float32))

    return train


def _site_audit(
    rows: tuple[np.ndarray, ...], train_fn: TrainFn, *, epsilon: float | None, n_reference: int
) -> SiteAudit:
    xm, ym, xn, yn = rows
    return audit_site(
        train_fn(xm, ym, 12345),
        train_fn,
        xm,
        ym,
        xn,
        yn,
        n_reference=n_reference,
        epsilon_claimed=epsilon,
        delta=DELTA,
        seed=1,
    )


def test_an_overfit_non_dp_model_is_detected(site_rows: tuple[np.ndarray, ...]) -> None:
    audit = _site_audit(site_rows, torch_train_fn(OVERFIT, None), epsilon=None, n_reference=4)
    loss = audit.attacks["loss"]
    assert loss.auc_lo is not None and loss.auc_lo > 0.8
    at_1pct = loss.tpr(0.01)
    assert at_1pct.tpr is not None and at_1pct.lo is not None
    assert at_1pct.tpr > 0.03 and at_1pct.lo > 0.01  # the interval excludes chance (1 %)
    online = audit.attacks["lira_online"].tpr(0.01)
    assert online.lo is not None and online.lo > at_1pct.tpr  # LiRA does better at low FPR
    assert audit.canary is not None and audit.canary.epsilon_lb > 1.0


def test_the_same_model_under_dp_at_epsilon_one_is_not_detected(
    site_rows: tuple[np.ndarray, ...],
) -> None:
    epsilon = 1.0
    steps = DP_TRAINING.local_epochs * round(1 / SAMPLE_RATE)
    sigma = plan_noise_multiplier(epsilon, DELTA, SAMPLE_RATE, steps)
    audit = _site_audit(
        site_rows, torch_train_fn(DP_TRAINING, sigma), epsilon=epsilon, n_reference=2
    )
    loss = audit.attacks["loss"]
    assert loss.auc_lo is not None and loss.auc_hi is not None
    assert loss.auc_lo <= 0.5 <= loss.auc_hi
    ceiling = math.exp(epsilon) * 0.01 + DELTA  # no (ε, δ)-DP attack does better at FPR 1 %
    for name, roc in audit.attacks.items():
        lo = roc.tpr(0.01).lo
        assert lo is not None and lo <= ceiling, name
    assert audit.canary is not None and audit.canary.epsilon_lb <= epsilon
    assert audit.canary.exceeds_claim is False


def test_broken_dp_is_caught_by_the_canary_bound(site_rows: tuple[np.ndarray, ...]) -> None:
    # Clipping but no noise, while the accountant's ε = 1 is claimed.
    audit = _site_audit(site_rows, torch_train_fn(DP_TRAINING, 0.0), epsilon=1.0, n_reference=0)
    assert audit.canary is not None
    assert audit.canary.epsilon_lb > 1.0 and audit.canary.exceeds_claim is True
    assert any("exceeds the claimed ε = 1" in n for n in audit.notes)
    assert audit.public()["mia_canary_exceeds_claim"] is True


def test_audit_seeds_keep_the_values_of_their_former_own_derivation() -> None:
    # Computed with mia.py's own SHA-256 derivation before it became common.seeds'.
    assert derive_audit_seed(0, "canaries") == 1393617420
    assert derive_audit_seed(123, "reference", 3) == 2330299337
