"""Local training: DP-SGD learns, noise and clipping are really applied, runs are repeatable."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedward.client.training import (
    Clipping,
    DPSettings,
    dp_steps,
    ghost_clipping_supported,
    predict_scores,
    train_local,
)
from fedward.common.errors import FedwardError
from fedward.common.learning_config import ModelConfig, TrainingConfig
from fedward.common.models import build_model

N, D = 400, 6


def separable(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    w = torch.linspace(1.0, -1.0, D)
    return x, (x @ w > 0).float()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((predict_scores(model, x) > 0.5) == y.numpy().astype(bool)).mean())


CFG = TrainingConfig(local_epochs=5, batch_size=64, learning_rate=0.5)
MODES: list[Clipping] = ["ghost", "hooks"]


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def test_non_dp_training_learns_a_separable_problem() -> None:
    x, y = separable()
    model = build_model(ModelConfig(kind="mlp", hidden=[8]), D, seed=0)
    train_local(model, x, y, cfg=CFG, dp=None, seed=0)
    assert accuracy(model, x, y) > 0.9


def test_dp_training_learns_a_separable_problem() -> None:
    x, y = separable()
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    dp = DPSettings(noise_multiplier=0.5, max_grad_norm=1.0, sample_rate=64 / N, noise_seed=1)
    train_local(model, x, y, cfg=CFG, dp=dp, seed=0)
    assert accuracy(model, x, y) > 0.9


def test_dp_training_with_huge_noise_does_not_learn() -> None:
    x, y = separable()
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    dp = DPSettings(noise_multiplier=1000.0, max_grad_norm=1.0, sample_rate=64 / N, noise_seed=1)
    result = train_local(model, x, y, cfg=CFG, dp=dp, seed=0)
    assert result.train_loss > 1.0


def test_cnn_trains_under_dp() -> None:
    x = torch.randn(50, 64)
    y = (x[:, 0] > 0).float()
    model = build_model(ModelConfig(kind="cnn", hidden=[8]), 64, [1, 8, 8], seed=0)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, noise_seed=0)
    result = train_local(model, x, y, cfg=TrainingConfig(), dp=dp, seed=0)
    assert np.isfinite(result.train_loss)


@pytest.mark.parametrize("clipping", MODES)
def test_trained_model_is_plain_without_opacus_hooks_or_attributes(clipping: Clipping) -> None:
    x, y = separable(100)
    model = build_model(ModelConfig(kind="mlp", hidden=[4]), D, seed=0)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.3, noise_seed=0)
    train_local(model, x, y, cfg=TrainingConfig(), dp=dp, seed=0, clipping=clipping)
    assert not any(k.startswith("_module.") for k in model.state_dict())
    param_attrs = ("grad_sample", "summed_grad", "_norm_sample", "_forward_counter")
    assert not any(hasattr(p, a) for p in model.parameters() for a in param_attrs)
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks
        assert not any(
            hasattr(m, a) for a in ("activations", "max_batch_len", "autograd_grad_sample_hooks")
        )


def test_ghost_clipping_is_the_default_where_every_layer_supports_it() -> None:
    assert ghost_clipping_supported(build_model(ModelConfig(kind="logistic"), D))
    assert ghost_clipping_supported(build_model(ModelConfig(kind="mlp", hidden=[8, 4]), D))
    cnn = build_model(ModelConfig(kind="cnn", hidden=[8]), 64, [1, 8, 8], seed=0)
    assert not ghost_clipping_supported(cnn)  # convolutions and group norm: hooks


@pytest.mark.parametrize("bias", [True, False])
def test_linear_norm_sampler_matches_opacus(bias: bool) -> None:
    from opacus.grad_sample import GradSampleModuleFastGradientClipping as Opacus

    from fedward.client.training import _GhostGradSampleModule as Ghost

    layer = torch.nn.Linear(5, 3, bias=bias)
    g = torch.Generator().manual_seed(0)
    for shape in ((7,), (7, 4)):  # flat rows, and sequences (Opacus's own path)
        a = torch.randn(*shape, 5, generator=g)
        b = torch.randn(*shape, 3, generator=g)
        ours = Ghost.NORM_SAMPLERS[torch.nn.Linear](layer, [a], b)
        theirs = Opacus.NORM_SAMPLERS[torch.nn.Linear](layer, [a], b)
        assert ours.keys() == theirs.keys()
        for p in ours:
            torch.testing.assert_close(ours[p], theirs[p])


@pytest.mark.parametrize("noise_multiplier", [0.0, 1.0])
@pytest.mark.parametrize(("rows", "sample_rate"), [(N, 64 / N), (40, 0.02)])
def test_ghost_and_hooks_clipping_give_the_same_weights(
    noise_multiplier: float, rows: int, sample_rate: float
) -> None:
    # Clipping active (C far below the rows' gradient norms), the same Poisson batches and the
    # same noise draws: the two modes must agree. 40 rows at q = 0.02 leave about half of the
    # batches empty.
    x, y = separable(rows)
    dp = DPSettings(noise_multiplier, max_grad_norm=0.01, sample_rate=sample_rate, noise_seed=3)
    cfg = TrainingConfig(local_epochs=2, batch_size=64, learning_rate=0.5)
    weights = {}
    for clipping in ("ghost", "hooks", None):
        model = build_model(ModelConfig(kind="mlp", hidden=[8]), D, seed=0)
        train_local(model, x, y, cfg=cfg, dp=dp, seed=0, clipping=clipping)
        weights[clipping] = flat(model)
    assert torch.isfinite(weights["ghost"]).all()
    torch.testing.assert_close(weights["ghost"], weights["hooks"], rtol=1e-4, atol=1e-6)
    assert torch.equal(weights[None], weights["ghost"])
    if noise_multiplier == 0:  # the clipping did change the result
        unclipped = build_model(ModelConfig(kind="mlp", hidden=[8]), D, seed=0)
        loose = DPSettings(0.0, max_grad_norm=1e6, sample_rate=sample_rate, noise_seed=3)
        train_local(unclipped, x, y, cfg=cfg, dp=loose, seed=0, clipping="ghost")
        assert not torch.allclose(flat(unclipped), weights["ghost"], rtol=1e-3, atol=1e-5)


def test_ghost_mode_asked_for_a_cnn_matches_hooks() -> None:
    # Layers without a norm sampler (convolution, group norm) get Opacus's per-sample gradients
    # inside the ghost module: slower than hooks, but the same clipped, noised update.
    x = torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).float()
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=0.01, sample_rate=0.5, noise_seed=0)
    weights = []
    for clipping in MODES:
        model = build_model(ModelConfig(kind="cnn", hidden=[8]), 64, [1, 8, 8], seed=0)
        cfg = TrainingConfig(local_epochs=2)
        train_local(model, x, y, cfg=cfg, dp=dp, seed=0, clipping=clipping)
        weights.append(flat(model))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("clipping", MODES)
def test_dp_update_is_the_mean_of_clipped_gradients_over_the_expected_batch(
    clipping: Clipping,
) -> None:
    # One step with every row drawn (q = 1), no noise, clipping active: the update must be
    # -lr / n * sum_i clip(g_i), with the per-sample gradients computed here row by row.
    x, y = separable(20)
    model = build_model(ModelConfig(kind="mlp", hidden=[4]), D, seed=0)
    ref = build_model(ModelConfig(kind="mlp", hidden=[4]), D, seed=0)
    lr, clip = 0.1, 0.05
    total = [torch.zeros_like(p) for p in ref.parameters()]
    for i in range(len(x)):
        ref.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            ref(x[i : i + 1])[:, 0], y[i : i + 1]
        )
        loss.backward()
        grads = []
        for p in ref.parameters():
            assert p.grad is not None
            grads.append(p.grad.detach().clone())
        norm = torch.sqrt(sum(((g**2).sum() for g in grads), torch.zeros(())))
        for t, g in zip(total, grads, strict=True):
            t += g * min(1.0, clip / (float(norm) + 1e-6))
    expected = torch.cat(
        [
            (p.detach() - lr * t / len(x)).flatten()
            for p, t in zip(ref.parameters(), total, strict=True)
        ]
    )
    dp = DPSettings(noise_multiplier=0.0, max_grad_norm=clip, sample_rate=1.0, noise_seed=0)
    cfg = TrainingConfig(learning_rate=lr)
    train_local(model, x, y, cfg=cfg, dp=dp, seed=0, clipping=clipping)
    torch.testing.assert_close(flat(model), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("private", [False, True])
def test_same_seeds_give_identical_weights(private: bool) -> None:
    x, y = separable()
    dp = DPSettings(1.0, 1.0, 64 / N, noise_seed=7) if private else None
    weights = []
    for _ in range(2):
        model = build_model(ModelConfig(kind="mlp", hidden=[8]), D, seed=0)
        train_local(model, x, y, cfg=CFG, dp=dp, seed=11)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_dp_without_noise_seed_draws_fresh_noise_each_run() -> None:
    x, y = separable(100)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.3)
    weights = []
    for _ in range(2):
        model = build_model(ModelConfig(kind="logistic"), D, seed=0)
        train_local(model, x, y, cfg=TrainingConfig(), dp=dp, seed=11)
        weights.append(model.state_dict()["0.weight"].clone())
    assert not torch.equal(weights[0], weights[1])


def test_dp_round_runs_round_one_over_q_steps_per_epoch() -> None:
    x, y = separable(200)
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    dp = DPSettings.for_batch_size(64, 200, noise_multiplier=1.0, max_grad_norm=1.0, noise_seed=0)
    result = train_local(model, x, y, cfg=TrainingConfig(local_epochs=2), dp=dp, seed=0)
    assert (result.steps, result.sample_rate, result.n_train) == (2 * 3, 64 / 200, 200)
    assert result.noise_multiplier == 1.0


def test_dp_steps_is_at_least_one_per_epoch() -> None:
    assert dp_steps(1.0, 3) == 3 and dp_steps(0.01, 1) == 100


@pytest.mark.parametrize("clipping", MODES)
def test_dp_update_norm_is_bounded_by_lr_times_clip_norm(clipping: Clipping) -> None:
    # Noise 0, one full batch (q = 1), tiny clip norm: the mean of clipped gradients has norm
    # at most C, so one SGD step moves the weights by at most lr * C.
    x, y = separable(100)
    x = x * 100.0  # large inputs: every per-sample gradient is far above the clip norm
    model = build_model(ModelConfig(kind="mlp", hidden=[8]), D, seed=0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    lr, clip = 0.1, 1e-3
    dp = DPSettings(noise_multiplier=0.0, max_grad_norm=clip, sample_rate=1.0, noise_seed=0)
    cfg = TrainingConfig(local_epochs=1, learning_rate=lr)
    result = train_local(model, x, y, cfg=cfg, dp=dp, seed=0, clipping=clipping)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert result.steps == 1
    moved = float((after - before).norm())
    assert 0 < moved <= lr * clip * (1 + 1e-4)


@pytest.mark.parametrize("clipping", MODES)
def test_empty_poisson_batches_still_take_noisy_steps(clipping: Clipping) -> None:
    x, y = separable(10)
    model = build_model(ModelConfig(kind="mlp", hidden=[4]), D, seed=0)
    before = flat(model)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.01, noise_seed=0)
    cfg = TrainingConfig(learning_rate=0.01)
    result = train_local(model, x, y, cfg=cfg, dp=dp, seed=0, clipping=clipping)
    assert result.steps == 100 and np.isfinite(result.train_loss)
    after = flat(model)
    assert torch.isfinite(after).all() and not torch.equal(after, before)


def test_training_restores_the_callers_thread_setting() -> None:
    threads = torch.get_num_threads()
    x, y = separable(50)
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    train_local(model, x, y, cfg=TrainingConfig(), dp=None, seed=0)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("clipping", MODES)
def test_fedprox_term_pulls_dp_training_towards_the_start(clipping: Clipping) -> None:
    x, y = separable()
    dp = DPSettings(noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=64 / N, noise_seed=0)
    start = build_model(ModelConfig(kind="logistic"), D, seed=0).state_dict()["0.weight"]
    drift = []
    for mu in (0.0, 1.0):
        model = build_model(ModelConfig(kind="logistic"), D, seed=0)
        train_local(model, x, y, cfg=CFG, dp=dp, seed=0, proximal_mu=mu, clipping=clipping)
        drift.append(float((model.state_dict()["0.weight"] - start).norm()))
    assert drift[1] < drift[0]


@pytest.mark.parametrize("clipping", MODES)
def test_fedprox_gradient_is_added_after_the_noise_not_clipped(clipping: Clipping) -> None:
    # q = 1, no noise, SGD, two steps. The proximal gradient mu * (w - w0) is zero on step 1 and
    # mu * step1 on step 2; added after clipping and scaling, it shifts step 2 by exactly
    # -lr * mu * step1. Clipped to C = 1e-3 or divided by q·n = 50, it would not.
    x, y = separable(50)
    dp = DPSettings(noise_multiplier=0.0, max_grad_norm=1e-3, sample_rate=1.0, noise_seed=0)
    cfg = TrainingConfig(local_epochs=2, learning_rate=0.1)
    runs = {}
    for mu in (0.0, 10.0):
        model = build_model(ModelConfig(kind="logistic"), D, seed=0)
        start = flat(model)
        train_local(model, x, y, cfg=cfg, dp=dp, seed=0, proximal_mu=mu, clipping=clipping)
        runs[mu] = flat(model) - start
    one = build_model(ModelConfig(kind="logistic"), D, seed=0)
    start = flat(one)
    cfg_one = TrainingConfig(learning_rate=0.1)
    train_local(one, x, y, cfg=cfg_one, dp=dp, seed=0, clipping=clipping)
    step1 = flat(one) - start
    torch.testing.assert_close(runs[10.0] - runs[0.0], -0.1 * 10.0 * step1, rtol=1e-4, atol=1e-7)


def test_an_unknown_clipping_mode_is_refused() -> None:
    x, y = separable(20)
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, noise_seed=0)
    unknown: Any = "fast"
    with pytest.raises(FedwardError, match="clipping"):
        train_local(model, x, y, cfg=CFG, dp=dp, seed=0, clipping=unknown)


def test_training_without_rows_is_refused() -> None:
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    with pytest.raises(FedwardError, match="at least one"):
        train_local(model, torch.zeros(0, D), torch.zeros(0), cfg=CFG, dp=None, seed=0)


def test_dp_settings_refuse_a_sample_rate_above_one() -> None:
    with pytest.raises(FedwardError, match="sample_rate"):
        DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=1.5)


def test_predict_scores_are_probabilities_one_per_row() -> None:
    x, _ = separable(30)
    scores = predict_scores(build_model(ModelConfig(kind="logistic"), D), x, batch_size=7)
    assert scores.shape == (30,) and scores.dtype == np.float64
    assert ((scores > 0) & (scores < 1)).all()


def _rare(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy problem with about 10 % positives: unweighted, the model mostly says negative."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    score = x[:, 0] + 0.8 * torch.randn(n, generator=g)
    return x, (score > 1.3).float()


@pytest.mark.parametrize("private", [False, True])
def test_a_positive_weight_makes_a_rare_outcome_recalled(private: bool) -> None:
    x, y = _rare()
    assert 0.05 < float(y.mean()) < 0.15
    recall = {}
    for weight in (1.0, 9.0):
        model = build_model(ModelConfig(kind="logistic"), D, seed=0)
        cfg = CFG.model_copy(update={"positive_weight": weight})
        dp = (
            # A clipping norm above the rows' gradients: clipping caps a weighted gradient too,
            # so under DP the weight acts only below the norm (the docs say so).
            DPSettings(noise_multiplier=0.3, max_grad_norm=10.0, sample_rate=64 / N, noise_seed=1)
            if private
            else None
        )
        train_local(model, x, y, cfg=cfg, dp=dp, seed=0)
        said = predict_scores(model, x) > 0.5
        recall[weight] = float(said[y.numpy().astype(bool)].mean())
    assert recall[9.0] > recall[1.0] + 0.3, recall


def test_dp_update_norm_stays_bounded_whatever_the_positive_weight() -> None:
    x, y = _rare()
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    before = flat(model)
    cfg = TrainingConfig(local_epochs=1, batch_size=64, learning_rate=0.5, positive_weight=50.0)
    dp = DPSettings(noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=64 / N, noise_seed=1)
    result = train_local(model, x, y, cfg=cfg, dp=dp, seed=0)
    # Clipping bounds each row's weighted gradient: at most lr * C per step, noise off.
    assert float((flat(model) - before).norm()) <= 0.5 * 1.0 * result.steps + 1e-5
