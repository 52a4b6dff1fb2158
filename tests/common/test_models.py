"""Models: one logit per row, Opacus-compatible, deterministic from a seed."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from fedward.common.errors import FedwardError
from fedward.common.learning_config import ModelConfig
from fedward.common.models import build_model, select_device, set_deterministic

CONFIGS = [
    ModelConfig(kind="logistic"),
    ModelConfig(kind="mlp", hidden=[16, 8], activation="relu"),
    ModelConfig(kind="mlp", hidden=[16], activation="tanh"),
    ModelConfig(kind="mlp", hidden=[16], activation="square"),
    ModelConfig(kind="cnn", hidden=[16]),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.activation}")
def test_every_model_outputs_one_logit_per_row(cfg: ModelConfig) -> None:
    model = build_model(cfg, 64, [1, 8, 8])
    assert model(torch.randn(5, 64)).shape == (5, 1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.activation}")
def test_every_model_passes_opacus_strict_validation(cfg: ModelConfig) -> None:
    ModuleValidator.validate(build_model(cfg, 64, [1, 8, 8]), strict=True)


def test_logistic_model_is_a_single_linear_layer() -> None:
    model = build_model(ModelConfig(kind="logistic"), 13)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(13, 1)]


def test_mlp_has_one_hidden_layer_per_hidden_size() -> None:
    model = build_model(ModelConfig(kind="mlp", hidden=[7, 5]), 13)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(13, 7), (7, 5), (5, 1)]


def test_cnn_accepts_image_shaped_input_too() -> None:
    model = build_model(ModelConfig(kind="cnn"), 64, [1, 8, 8])
    x = torch.randn(3, 64)
    assert torch.allclose(model(x), model(x.reshape(3, 1, 8, 8)))


def test_cnn_uses_group_norm_not_batch_norm() -> None:
    model = build_model(ModelConfig(kind="cnn"), 64, [1, 8, 8])
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds and not any("BatchNorm" in k for k in kinds)


def test_cnn_without_image_shape_is_refused() -> None:
    with pytest.raises(FedwardError, match="image_shape"):
        build_model(ModelConfig(kind="cnn"), 64)


def test_cnn_with_image_shape_not_matching_inputs_is_refused() -> None:
    with pytest.raises(FedwardError, match="64"):
        build_model(ModelConfig(kind="cnn"), 64, [1, 4, 4])


def test_same_seed_gives_identical_weights() -> None:
    cfg = ModelConfig(kind="mlp", hidden=[8])
    a, b = build_model(cfg, 10, seed=3), build_model(cfg, 10, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_different_seeds_give_different_weights() -> None:
    cfg = ModelConfig(kind="logistic")
    a, b = build_model(cfg, 10, seed=1), build_model(cfg, 10, seed=2)
    assert not torch.equal(a.state_dict()["0.weight"], b.state_dict()["0.weight"])


def test_building_a_model_leaves_the_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(ModelConfig(kind="cnn"), 64, [1, 8, 8], seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_select_device_cpu_is_cpu() -> None:
    assert select_device("cpu") == torch.device("cpu")


def test_select_device_auto_matches_cuda_availability() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected


def test_select_device_refuses_an_unknown_name() -> None:
    with pytest.raises(FedwardError, match="tpu"):
        select_device("tpu")


def test_set_deterministic_makes_global_draws_repeatable() -> None:
    was = torch.are_deterministic_algorithms_enabled()
    try:
        record = set_deterministic(5)
        first = torch.rand(2)
        set_deterministic(5)
        assert torch.equal(torch.rand(2), first)
        assert record["seed"] == 5 and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was)
