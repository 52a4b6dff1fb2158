"""Local training: DP-SGD learns, noise and clipping are really applied, runs are repeatable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedward.client.training import DPSettings, dp_steps, predict_scores, train_local
from fedward.common.config import ModelConfig, TrainingConfig
from fedward.common.errors import FedwardError
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


def test_trained_state_dict_has_no_opacus_prefix_or_attributes() -> None:
    x, y = separable(100)
    model = build_model(ModelConfig(kind="mlp", hidden=[4]), D, seed=0)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.3, noise_seed=0)
    train_local(model, x, y, cfg=TrainingConfig(), dp=dp, seed=0)
    assert not any(k.startswith("_module.") for k in model.state_dict())
    assert not any(
        hasattr(p, "grad_sample") or hasattr(p, "summed_grad") for p in model.parameters()
    )


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


def test_dp_update_norm_is_bounded_by_lr_times_clip_norm() -> None:
    # Noise 0, one full batch (q = 1), tiny clip norm: the mean of clipped gradients has norm
    # at most C, so one SGD step moves the weights by at most lr * C.
    x, y = separable(100)
    x = x * 100.0  # large inputs: every per-sample gradient is far above the clip norm
    model = build_model(ModelConfig(kind="mlp", hidden=[8]), D, seed=0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    lr, clip = 0.1, 1e-3
    dp = DPSettings(noise_multiplier=0.0, max_grad_norm=clip, sample_rate=1.0, noise_seed=0)
    cfg = TrainingConfig(local_epochs=1, learning_rate=lr)
    result = train_local(model, x, y, cfg=cfg, dp=dp, seed=0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert result.steps == 1
    moved = float((after - before).norm())
    assert 0 < moved <= lr * clip * (1 + 1e-4)


def test_empty_poisson_batches_still_take_noisy_steps() -> None:
    x, y = separable(10)
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    before = model.state_dict()["0.weight"].clone()
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.01, noise_seed=0)
    result = train_local(model, x, y, cfg=TrainingConfig(learning_rate=0.01), dp=dp, seed=0)
    assert result.steps == 100
    assert not torch.equal(model.state_dict()["0.weight"], before)


def test_training_restores_the_callers_thread_setting() -> None:
    threads = torch.get_num_threads()
    x, y = separable(50)
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    train_local(model, x, y, cfg=TrainingConfig(), dp=None, seed=0)
    assert torch.get_num_threads() == threads


def test_fedprox_term_pulls_dp_training_towards_the_start() -> None:
    x, y = separable()
    dp = DPSettings(noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=64 / N, noise_seed=0)
    start = build_model(ModelConfig(kind="logistic"), D, seed=0).state_dict()["0.weight"]
    drift = []
    for mu in (0.0, 1.0):
        model = build_model(ModelConfig(kind="logistic"), D, seed=0)
        train_local(model, x, y, cfg=CFG, dp=dp, seed=0, proximal_mu=mu)
        drift.append(float((model.state_dict()["0.weight"] - start).norm()))
    assert drift[1] < drift[0]


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
