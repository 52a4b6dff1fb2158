"""Models a site can train under DP-SGD, and the torch settings that make runs repeatable.

Every model outputs ONE logit per row (binary task, ``BCEWithLogitsLoss``) and is built only from
layers Opacus computes per-sample gradients for (Yousefpour et al. 2021, "Opacus: User-Friendly
Differential Privacy Library in PyTorch"): Linear, Conv2d and GroupNorm — never BatchNorm, whose
batch statistics mix samples and so break per-sample clipping (Abadi et al. 2016).

Initialisation draws from a local ``torch.Generator`` so that building a model never moves the
global RNG: the same ``seed`` gives the same weights at every site and in every process.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedward.common.errors import FedwardError
from fedward.common.learning_config import ModelConfig


class Square(nn.Module):
    """x² activation: a polynomial, so encrypted (CKKS) inference of an MLP is exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class ImageShape(nn.Module):
    """Reshape flat rows (n, C*H*W) into images (n, C, H, W); images pass through unchanged.

    Preprocessing hands every model a flat float matrix, so the CNN accepts the same input.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x.reshape(x.shape[0], *self.shape)
        return x


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "square":
        return Square()
    raise FedwardError(f"model.activation: unknown activation '{name}' (relu, tanh, square)")


def _groups(channels: int) -> int:
    """Largest of 8, 4, 2, 1 that divides ``channels`` (GroupNorm needs a divisor)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _cnn(cfg: ModelConfig, n_inputs: int, image_shape: Sequence[int]) -> nn.Sequential:
    if len(image_shape) != 3:
        raise FedwardError(
            f"model.kind = 'cnn' needs image_shape [C, H, W], got {list(image_shape)}"
        )
    c, h, w = (int(s) for s in image_shape)
    if c * h * w != n_inputs:
        raise FedwardError(
            f"model.kind = 'cnn': image_shape {list(image_shape)} has {c * h * w} values but the "
            f"preprocessed rows have {n_inputs} features"
        )
    # Width of the second conv from model.hidden[0] (default 32); the first has half of it.
    c2 = cfg.hidden[0] if cfg.hidden else 32
    c1 = max(c2 // 2, 1)
    pooled = (h // 2) * (w // 2) if h >= 2 and w >= 2 else h * w
    return nn.Sequential(
        ImageShape((c, h, w)),
        nn.Conv2d(c, c1, kernel_size=3, padding=1),
        nn.GroupNorm(_groups(c1), c1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, kernel_size=3, padding=1),
        nn.GroupNorm(_groups(c2), c2),
        nn.ReLU(),
        nn.MaxPool2d(2) if h >= 2 and w >= 2 else nn.Identity(),
        nn.Flatten(),
        nn.Linear(c2 * pooled, 1),
    )


def _init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation, drawn from ``generator`` instead of the global RNG."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.GroupNorm) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_model(
    cfg: ModelConfig,
    n_inputs: int,
    image_shape: Sequence[int] | None = None,
    *,
    seed: int = 0,
) -> nn.Module:
    """Build the model ``cfg`` asks for, with one logit output and weights fixed by ``seed``.

    logistic: Linear(n_inputs, 1). mlp: (Linear → activation) per ``cfg.hidden`` size, then
    Linear(…, 1). cnn: Conv→GroupNorm→ReLU→Conv→GroupNorm→ReLU→MaxPool→Linear on ``image_shape``
    [C, H, W], taking flat rows.
    """
    if n_inputs < 1:
        raise FedwardError(f"a model needs at least one input feature, got n_inputs={n_inputs}")
    # Build on the meta device (no allocation, no RNG use), then initialise from our generator.
    with torch.device("meta"):
        model: nn.Module
        if cfg.kind == "logistic":
            model = nn.Sequential(nn.Linear(n_inputs, 1))
        elif cfg.kind == "mlp":
            layers: list[nn.Module] = []
            width = n_inputs
            for h in cfg.hidden:
                layers += [nn.Linear(width, h), _activation(cfg.activation)]
                width = h
            layers.append(nn.Linear(width, 1))
            model = nn.Sequential(*layers)
        elif cfg.kind == "cnn":
            if image_shape is None:
                raise FedwardError(
                    "model.kind = 'cnn' needs image data: the schema declares no image_shape"
                )
            model = _cnn(cfg, n_inputs, image_shape)
        else:  # pragma: no cover - pydantic's Literal already refuses other kinds
            raise FedwardError(f"model.kind: unknown model kind '{cfg.kind}'")
    model = model.to_empty(device="cpu")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    with torch.no_grad():
        _init_parameters(model, generator)
    return model


def select_device(prefer: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cpu`` / ``cuda`` / ``cuda:N`` explicitly."""
    choice = prefer.strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FedwardError(f"device '{prefer}' was asked for but CUDA is not available here")
        return torch.device(choice)
    raise FedwardError(f"device '{prefer}' is not one of auto, cpu, cuda, cuda:N")


def set_deterministic(seed: int) -> dict[str, Any]:
    """Seed every RNG and ask torch for deterministic kernels; returns the settings for a manifest.

    ``warn_only=True`` so an op without a deterministic kernel warns instead of failing a run.
    CUBLAS_WORKSPACE_CONFIG must be set before the first cuBLAS call to make CUDA matmuls
    deterministic; it is harmless on CPU.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {
        "seed": int(seed),
        "torch_version": torch.__version__,
        "deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }
