"""Encrypted evaluation of the models a federation trains: parity with plaintext, masking, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
import torch

from fedward.client.he_predict import preprocess
from fedward.common.errors import FedwardError
from fedward.common.he_context import new_secret_context
from fedward.common.learning_config import ModelConfig
from fedward.common.models import build_model
from fedward.common.preprocessing import SharedTransform
from fedward.common.run_config import RunConfig
from fedward.server.he_model import (
    HEModel,
    NotHECompatible,
    layers_from_state,
    load_released_model,
    load_run_model,
)
from tests.server.he_support import heart_disease_test_rows

PARITY = 1e-3


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _encrypted_logits(model: HEModel, x: np.ndarray) -> np.ndarray:
    ctx = new_secret_context(model.parameters)
    features = [ts.ckks_vector(ctx, x[:, j].tolist()) for j in range(x.shape[1])]
    return np.asarray(model.evaluate(features, len(x)).decrypt())


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_encrypted_probabilities_match_plaintext_on_every_hospitals_test_split(
    he_runs: dict[str, Path], kind: str
) -> None:
    run_dir = he_runs[kind]
    model = load_run_model(run_dir)
    run = RunConfig.model_validate(json.loads((run_dir / "run_config.json").read_text()))
    transform = SharedTransform.from_json(model.transform_json)
    torch_model = build_model(run.model, model.n_features)
    torch_model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    torch_model.eval()
    worst = 0.0
    for site, frame in heart_disease_test_rows(run).items():
        x = preprocess(transform, frame, source=site)
        with torch.no_grad():
            reference = _sigmoid(torch_model(torch.from_numpy(x)).double().numpy()[:, 0])
        # The float64 reference the service is built on is the trained torch model.
        np.testing.assert_allclose(_sigmoid(model.plaintext_logits(x)), reference, atol=1e-6)
        encrypted = _sigmoid(_encrypted_logits(model, x))
        gap = np.abs(encrypted - reference)
        worst = max(worst, float(gap.max()))
        assert gap.max() <= PARITY, f"{site}: encrypted and plaintext differ by {gap.max():.2e}"
        clear = np.abs(reference - 0.5) > PARITY
        assert ((encrypted >= 0.5) == (reference >= 0.5))[clear].all(), site
    assert worst > 0.0  # the comparison really went through CKKS, which is never exact


def test_the_parameters_follow_the_models_depth(he_runs: dict[str, Path]) -> None:
    lr, mlp = load_run_model(he_runs["logistic"]), load_run_model(he_runs["mlp"])
    assert (lr.depth, lr.parameters.poly_modulus_degree) == (1, 8192)
    assert not lr.parameters.needs_relin_keys
    assert (mlp.depth, mlp.parameters.poly_modulus_degree) == (3, 16384)
    assert mlp.parameters.needs_relin_keys
    assert mlp.description == "mlp (16, square)"


def _forged(vector: ts.CKKSVector, claimed: int) -> ts.CKKSVector:
    """The same ciphertext relabelled as holding only ``claimed`` values (TenSEAL's wire format:
    field 1 is the packed shape)."""
    data = vector.serialize()
    assert data[:4] == bytes([0x0A, 0x02, 0x80, 0x20])  # shape [4096]
    assert claimed < 128
    return ts.ckks_vector_from(vector.context(), bytes([0x0A, 0x01, claimed]) + data[4:])


def _full_view(vector: ts.CKKSVector, n: int) -> np.ndarray:
    data = vector.serialize()
    assert data[:3] == bytes([0x0A, 0x01, n])
    return np.asarray(
        ts.ckks_vector_from(vector.context(), bytes([0x0A, 0x02, 0x80, 0x20]) + data[3:]).decrypt()
    )


def test_slots_beyond_the_declared_patients_come_back_zero(he_runs: dict[str, Path]) -> None:
    """A client that hides 4,086 more patients in the slots it did not declare gets nothing for them,
    so the budget's count of declared patients is the count of predictions made."""
    model = load_run_model(he_runs["logistic"])
    ctx = new_secret_context(model.parameters)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, model.n_features))
    forged = [_forged(ts.ckks_vector(ctx, x[:, j].tolist()), 10) for j in range(x.shape[1])]
    out = _full_view(model.evaluate(forged, 10), 10)
    reference = model.plaintext_logits(x)
    np.testing.assert_allclose(out[:10], reference[:10], atol=1e-3)
    assert np.abs(out[10:]).max() < 1e-3
    assert np.abs(reference[10:]).max() > 0.1  # there was something to leak


def test_a_relu_mlp_or_a_cnn_is_refused_with_the_fix_named() -> None:
    state = build_model(ModelConfig(kind="mlp", hidden=[8]), 5).state_dict()
    with pytest.raises(NotHECompatible, match=r"activation 'relu'.*he_compatible"):
        layers_from_state({"kind": "mlp", "activation": "relu"}, state)
    with pytest.raises(NotHECompatible, match="kind 'cnn'"):
        layers_from_state({"kind": "cnn"}, state)
    square = build_model(ModelConfig(kind="mlp", hidden=[8], activation="square"), 5).state_dict()
    layers = layers_from_state({"kind": "mlp", "activation": "square"}, square)
    assert [(lay.weight.shape, lay.square_after) for lay in layers] == [
        ((8, 5), True),
        ((1, 8), False),
    ]


def test_he_compatible_configs_train_square_mlps_and_refuse_the_rest() -> None:
    assert ModelConfig(kind="mlp", he_compatible=True).activation == "square"
    with pytest.raises(ValueError, match="activation 'tanh' is not a polynomial"):
        ModelConfig(kind="mlp", activation="tanh", he_compatible=True)
    with pytest.raises(ValueError, match="CNN cannot be evaluated"):
        ModelConfig(kind="cnn", he_compatible=True)
    with pytest.raises(ValueError, match="at most 3 hidden layers"):
        ModelConfig(kind="mlp", hidden=[4, 4, 4, 4], he_compatible=True)
    # Off by default and left out of the hash while off: earlier approvals keep their hash.
    plain = RunConfig().config_hash()
    assert RunConfig(model=ModelConfig(he_compatible=False)).config_hash() == plain
    assert RunConfig(model=ModelConfig(he_compatible=True)).config_hash() != plain


def test_a_release_is_served_only_when_it_verifies(he_release: Path, tmp_path: Path) -> None:
    model = load_released_model(he_release)
    assert model.released and model.kind == "logistic"
    import shutil

    copy = Path(shutil.copytree(he_release, tmp_path / "edited"))
    (copy / "transform.json").write_text((copy / "transform.json").read_text() + " ")
    with pytest.raises(FedwardError, match=r"does not verify.*transform\.json"):
        load_released_model(copy)
    with pytest.raises(FedwardError, match="not a release"):
        load_released_model(tmp_path)


def test_an_unfinished_run_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FedwardError, match=r"model\.pt: missing"):
        load_run_model(tmp_path)
