"""A trained model as the encrypted-inference service evaluates it: dense layers and squares.

Patients sit in the slots of one ciphertext per feature, so a dense layer is, for each output
unit, a sum of ciphertext-times-scalar products plus the bias: one level and no rotations. A
square activation is one ciphertext product (relinearised) and one more level. The output layer
multiplies by a plaintext vector instead of a scalar: TenSEAL encodes it with zeros after the
``n`` declared patients, so every other slot comes back as zero and a client that hid more
patients in the unused slots gets nothing for them. That is what lets the query budget count the
patients a client declares.

The server returns logits; the sigmoid is the clinic's to apply after decrypting, so logistic
regression costs one level and only hidden activations ever need a polynomial.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts
import torch

from fedward.common.errors import FedwardError
from fedward.common.he_params import CKKSParameters, parameters_for_depth

HE_ACTIVATIONS = ("square",)


class NotHECompatible(FedwardError):
    """The model has a layer that cannot be evaluated on CKKS ciphertexts."""


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # (out, in)
    bias: np.ndarray  # (out,)
    square_after: bool


@dataclass(frozen=True)
class HEModel:
    """The weights as float64 arrays plus what the service tells a clinic about them."""

    layers: tuple[DenseLayer, ...]
    kind: str
    description: str
    model_id: str
    released: bool
    transform_json: str
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return int(self.layers[0].weight.shape[1])

    @property
    def depth(self) -> int:
        """Levels one evaluation consumes: one per dense layer, one per square."""
        return len(self.layers) + sum(layer.square_after for layer in self.layers)

    @property
    def parameters(self) -> CKKSParameters:
        return parameters_for_depth(
            self.depth, needs_relin_keys=any(layer.square_after for layer in self.layers)
        )

    # ---- evaluation -------------------------------------------------------------------------

    def plaintext_logits(self, x: np.ndarray) -> np.ndarray:
        """The same computation in float64: the reference the encrypted path must match."""
        h = np.asarray(x, dtype=np.float64)
        for layer in self.layers:
            h = h @ layer.weight.T + layer.bias
            if layer.square_after:
                h = h * h
        return h[:, 0]

    def evaluate(self, features: list[ts.CKKSVector], n_patients: int) -> ts.CKKSVector:
        """Encrypted logits of the ``n_patients`` in the slots; every other slot is zeroed."""
        if len(features) != self.n_features:
            raise ValueError(f"expected {self.n_features} feature ciphertexts, got {len(features)}")
        h: list[ts.CKKSVector] = list(features)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h = [
                _dense_unit(h, layer.weight[k], float(layer.bias[k]), n_patients, index == last)
                for k in range(layer.weight.shape[0])
            ]
            if layer.square_after:
                for unit in h:
                    unit.square_()
        return h[0]


def _dense_unit(
    inputs: list[ts.CKKSVector], weights: np.ndarray, bias: float, n: int, masked: bool
) -> ts.CKKSVector:
    """Σ_j w_j·x_j + b for one output unit; plaintext vectors of length ``n`` when ``masked``."""
    acc: ts.CKKSVector | None = None
    for x, w in zip(inputs, weights, strict=True):
        w = float(w)
        if w == 0.0 and not masked:
            continue
        term = x.mul([w] * n) if masked else x.mul(w)
        if acc is None:
            acc = term
        else:
            acc.add_(term)
    if acc is None:  # every weight zero: still a valid ciphertext of the bias
        acc = inputs[0].mul(0.0)
    return acc.add([bias] * n) if masked else acc.add(bias)


# ---- loading ------------------------------------------------------------------------------------


def layers_from_state(
    description: dict[str, Any], state: dict[str, torch.Tensor]
) -> list[DenseLayer]:
    """Dense layers from a fedward model's state dict, refusing what CKKS cannot evaluate."""
    kind = description.get("kind")
    activation = description.get("activation", "relu")
    if kind not in ("logistic", "mlp"):
        raise NotHECompatible(
            f"model kind '{kind}' cannot be evaluated on ciphertexts: logistic or mlp only"
        )
    if kind == "mlp" and activation not in HE_ACTIVATIONS:
        raise NotHECompatible(
            f"the model's activation '{activation}' is not a polynomial and cannot be evaluated "
            "on ciphertexts; train with model.he_compatible = true (square activation)"
        )
    linear_keys = sorted(
        {k.rsplit(".", 1)[0] for k in state if k.endswith(".weight")},
        key=lambda k: int(k.split(".")[-1]) if k.split(".")[-1].isdigit() else 0,
    )
    layers = []
    for i, key in enumerate(linear_keys):
        weight = state[f"{key}.weight"].detach().cpu().double().numpy()
        bias_t = state.get(f"{key}.bias")
        bias = (
            bias_t.detach().cpu().double().numpy()
            if bias_t is not None
            else np.zeros(weight.shape[0])
        )
        if weight.ndim != 2:
            raise NotHECompatible(f"layer '{key}' is not a dense layer")
        layers.append(DenseLayer(weight, bias, square_after=i < len(linear_keys) - 1))
    if not layers or layers[-1].weight.shape[0] != 1:
        raise NotHECompatible("the model must end in a single logit")
    for a, b in itertools.pairwise(layers):
        if a.weight.shape[0] != b.weight.shape[1]:
            raise NotHECompatible("the model's layer sizes do not chain")
    return layers


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise FedwardError(f"{path}: missing; the model folder is incomplete")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FedwardError(f"{path}: not readable JSON ({exc})") from None


def _model_from(
    folder: Path, state: dict[str, torch.Tensor], *, model_id: str, released: bool
) -> HEModel:
    description = _read_json(folder / "model.json")
    transform_path = folder / "transform.json"
    if not transform_path.exists():
        raise FedwardError(f"{transform_path}: missing; the frozen preprocessing is required")
    transform_json = transform_path.read_text()
    from fedward.common.preprocessing import SharedTransform

    transform = SharedTransform.from_json(transform_json)
    layers = layers_from_state(description, state)
    names = tuple(transform.feature_names)
    if len(names) != layers[0].weight.shape[1]:
        raise FedwardError(
            f"{folder}: the preprocessing gives {len(names)} features but the model takes "
            f"{layers[0].weight.shape[1]}"
        )
    kind = str(description["kind"])
    if kind == "logistic":
        text = "logistic regression"
    else:
        text = f"mlp ({'-'.join(str(h) for h in description.get('hidden', []))}, square)"
    return HEModel(
        layers=tuple(layers),
        kind=kind,
        description=text,
        model_id=model_id,
        released=released,
        transform_json=transform_json,
        feature_names=names,
    )


def load_released_model(release_dir: str | Path) -> HEModel:
    """A release that passed the gate, verified byte for byte against its manifest first."""
    from fedward.server.release import MANIFEST_FILE, MODEL_FILE
    from fedward.server.release_verify import verify_release

    folder = Path(release_dir)
    if not (folder / MANIFEST_FILE).exists():
        raise FedwardError(
            f"{folder}: not a release ({MANIFEST_FILE} missing). Serve a model released with "
            "`fedward release export`, or an unreleased run folder with --unreleased-run "
            "(simulation and tests only)"
        )
    problems = verify_release(folder)
    if problems:
        raise FedwardError(f"{folder}: release does not verify: " + "; ".join(problems))
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        module = torch.jit.load(str(folder / MODEL_FILE), map_location="cpu")
    state = {k: v for k, v in module.state_dict().items()}
    manifest = _read_json(folder / MANIFEST_FILE)
    model_id = f"{manifest.get('run_name') or folder.name} ({manifest.get('run_id', '?')})"
    return _model_from(folder, state, model_id=model_id, released=True)


def load_run_model(run_dir: str | Path) -> HEModel:
    """An unreleased run's final model: for simulation and tests, never for patients."""
    folder = Path(run_dir)
    model_path = folder / "model.pt"
    if not model_path.exists():
        raise FedwardError(f"{model_path}: missing; the run has not finished")
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise FedwardError(f"{model_path}: not a state dict")
    record_path = folder / "run_record.json"
    record = _read_json(record_path) if record_path.exists() else {}
    model_id = str(record.get("run_id") or folder.name)
    return _model_from(folder, state, model_id=model_id, released=False)
