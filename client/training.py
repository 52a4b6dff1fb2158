"""Local training at a site: DP-SGD with Poisson sampling and per-sample clipping, or plain SGD.

Implements DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy"): each step samples
every row independently with probability q (Poisson sampling, the subsampling the RDP analysis of
Mironov 2017 / Mironov, Talwar, Zhang 2019 assumes), clips each row's gradient to L2 norm C, sums,
adds N(0, σ²C²) noise and divides by the expected batch size qn. The clipping and noise are Opacus's
own (Yousefpour et al. 2021), in one of two modes that compute the same clipped sum:

- ``"ghost"`` (the default when every trainable layer has an Opacus norm sampler, as the logistic
  and MLP models do): ghost clipping (Goodfellow 2015; Li et al. 2022, "Large Language Models Can
  Be Strong Differentially Private Learners"). ``GradSampleModuleFastGradientClipping`` computes
  each row's gradient norm from the layer's activations and backprops without materialising the
  per-sample gradients (for ``Linear`` layers with a cheaper evaluation of Opacus's formula); a
  second backward pass of the loss reweighted by the clipping factors gives the sum of clipped
  gradients; ``DPOptimizerFastGradientClipping`` noises and scales it.
- ``"hooks"`` (any other model, e.g. the CNN): ``GradSampleModule`` materialises per-sample
  gradients and ``DPOptimizer`` clips, noises and scales them.

Only batch sampling is done here, directly on tensors: a DataLoader's per-sample collation costs
more than the whole step for these tiny models.

Training does not account: the caller records ``(noise_multiplier, sample_rate, steps)`` from the
returned ``TrainResult`` in the site's ledger (see ``fedward.client.accounting``).

Randomness. Under DP the Poisson sampling and the noise must be secret to the adversary; the
coordinator knows the run ``seed``, so they are NOT drawn from it. They come from
``DPSettings.noise_seed`` when one is given (simulation and tests, for reproducible runs: torch's
Mersenne Twister, seeded) and from the operating system's CSPRNG otherwise (deployment: every
uniform and Gaussian from ``os.urandom``, Opacus's secure-mode noise construction; see
``fedward.client.randomness``). ``TrainResult.randomness`` says which. ``seed`` fixes only the
non-DP shuffling.

Threads. For models this small, torch's intra-op thread pool costs more than it saves (and several
sites share the cores in a simulation), so training runs with one intra-op thread on CPU when the
model has at most ``SMALL_MODEL_PARAMS`` parameters, restoring the caller's setting afterwards.
Pass ``num_threads`` to override.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.module_utils import trainable_modules
from scipy.special import expit
from torch import nn

from fedward.client.randomness import SEEDED, SystemRandom, with_system_noise
from fedward.client.seeds import noise_generator_seed
from fedward.common.errors import FedwardError
from fedward.common.learning_config import TrainingConfig

SMALL_MODEL_PARAMS = 200_000

Clipping = Literal["ghost", "hooks"]
"""How DP-SGD gets each row's clipped gradient; both give the same clipped sum (see module doc)."""


@dataclass(frozen=True)
class DPSettings:
    """One round's DP-SGD parameters, as the site's privacy plan fixed them."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    noise_seed: int | None = None
    """Seeds the Poisson sampling and the noise. None (deployment): fresh OS entropy. Never pass
    a value the coordinator knows in deployment: whoever knows it can subtract the noise."""

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0:
            raise FedwardError(f"DP noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise FedwardError(f"DP max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.sample_rate <= 1:
            raise FedwardError(f"DP sample_rate must be in (0, 1], got {self.sample_rate}")

    @staticmethod
    def for_batch_size(
        batch_size: int,
        n_train: int,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        noise_seed: int | None = None,
    ) -> DPSettings:
        """Settings whose expected Poisson batch is ``batch_size`` rows (q = min(1, b / n))."""
        if n_train < 1:
            raise FedwardError("DP training needs at least one training row")
        return DPSettings(
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            sample_rate=min(1.0, batch_size / n_train),
            noise_seed=noise_seed,
        )


@dataclass(frozen=True)
class TrainResult:
    """What the caller needs to account for the round (DP) and to report it."""

    steps: int
    sample_rate: float
    noise_multiplier: float | None
    train_loss: float
    """Mean training loss over the round's batches. NOT covered by DP: keep it at the site or
    list it as a non-DP output."""
    n_train: int
    randomness: str | None = None
    """Source of DP-SGD's sampling and noise (``fedward.client.randomness``); None without DP."""


def dp_steps(sample_rate: float, local_epochs: int) -> int:
    """Steps of one DP round: ``round(1 / q)`` Poisson batches per epoch, at least one."""
    return local_epochs * max(1, round(1.0 / sample_rate))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (None: unchanged), then restore the setting."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _base_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] == 0:
        raise FedwardError("local training needs at least one training row, got none")
    if y.shape[0] != x.shape[0]:
        raise FedwardError(f"features have {x.shape[0]} rows but labels have {y.shape[0]}")


def _proximal_term(
    model: nn.Module, anchor: list[torch.Tensor] | None, mu: float
) -> torch.Tensor | None:
    """FedProx (Li et al. 2020) term mu/2 ||w - w_global||², for the non-DP path."""
    if anchor is None or mu == 0:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros((), device=params[0].device)
    for p, a in zip(params, anchor, strict=True):
        total = total + ((p - a) ** 2).sum()
    return 0.5 * mu * total


# Opacus's norm-sampler signature: (layer, activations, backprops) -> {parameter: per-row norms}.
_NormSampler = Callable[..., dict[torch.Tensor, torch.Tensor]]
_OPACUS_LINEAR_NORM_SAMPLE: _NormSampler = GradSampleModuleFastGradientClipping.NORM_SAMPLERS[
    nn.Linear
]


def _linear_norm_sample(
    layer: nn.Linear, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Per-row gradient norms of a ``Linear`` layer on flat rows, with two vector norms.

    A row's weight gradient is the outer product b a^T, whose norm is |b| |a|: the identity
    Opacus's own norm sampler evaluates, with einsums that cost more than the rest of a small
    model's step. Sequence inputs (3-D backprops) go to Opacus's.
    """
    if backprops.dim() != 2:
        return _OPACUS_LINEAR_NORM_SAMPLE(layer, activations, backprops)
    b = torch.linalg.vector_norm(backprops, dim=1)
    norms: dict[torch.Tensor, torch.Tensor] = {}
    if layer.weight.requires_grad:
        a = torch.linalg.vector_norm(activations[0].to(backprops.dtype), dim=1)
        norms[layer.weight] = b * a
    if layer.bias is not None and layer.bias.requires_grad:
        norms[layer.bias] = b
    return norms


class _GhostGradSampleModule(GradSampleModuleFastGradientClipping):
    """Opacus's ghost-clipping module with a cheaper norm sampler for ``Linear`` layers.

    Registered on this subclass only, so other users of Opacus in the process are unaffected.
    """

    NORM_SAMPLERS: ClassVar[dict[type[nn.Module], _NormSampler]] = {
        **GradSampleModuleFastGradientClipping.NORM_SAMPLERS,
        nn.Linear: _linear_norm_sample,
    }


def ghost_clipping_supported(model: nn.Module) -> bool:
    """Whether ghost clipping pays off: every trainable layer has an Opacus norm sampler.

    For other layers Opacus would materialise per-sample gradients anyway and add a second
    backward pass on top, so the hooks mode is cheaper; Opacus also refuses tied parameters
    under ghost clipping.
    """
    seen: set[int] = set()
    for _, module in trainable_modules(model):
        if type(module) not in _GhostGradSampleModule.NORM_SAMPLERS:
            return False
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                return False
            seen.add(id(p))
    return bool(seen)


class _GhostDPOptimizer(DPOptimizerFastGradientClipping):
    """Opacus's ghost-clipping optimizer, keeping the clipped sum by a tensor copy.

    Opacus's ``accumulate`` stores ``.grad`` in ``summed_grad`` with ``copy.deepcopy``, whose
    Python overhead is a noticeable share of a small model's step; the value kept is the same.
    """

    def accumulate(self) -> None:
        for p in self.params:
            if p.summed_grad is not None:
                p.summed_grad.add_(p.grad)
            else:
                p.summed_grad = p.grad.detach().clone()


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cfg: TrainingConfig,
    dp: DPSettings | None,
    seed: int,
    device: torch.device | str = "cpu",
    proximal_mu: float = 0.0,
    num_threads: int | None = None,
    clipping: Clipping | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``cfg.local_epochs`` epochs; DP-SGD when ``dp`` is given.

    ``model`` stays the plain module (its ``state_dict`` has no ``_module.`` prefix). ``y`` holds
    0/1 labels. ``proximal_mu`` > 0 adds FedProx's proximal term towards the starting weights.
    ``clipping`` picks the DP mode (see module doc); None: ghost when
    ``ghost_clipping_supported(model)``, else hooks. Ignored without ``dp``.
    """
    if clipping not in (None, "ghost", "hooks"):
        raise FedwardError(f"clipping must be 'ghost', 'hooks' or None, got {clipping!r}")
    _check_data(x, y)
    dev = torch.device(device)
    model.to(dev)
    xd = x.to(dev, dtype=torch.float32)
    yd = y.to(dev, dtype=torch.float32).reshape(-1)
    if num_threads is None and dev.type == "cpu" and count_parameters(model) <= SMALL_MODEL_PARAMS:
        num_threads = 1
    anchor = (
        [p.detach().clone() for p in model.parameters() if p.requires_grad]
        if proximal_mu > 0
        else None
    )
    model.train()
    with _intra_op_threads(num_threads):
        if dp is None:
            return _train_plain(model, xd, yd, cfg=cfg, seed=seed, anchor=anchor, mu=proximal_mu)
        if clipping is None:
            clipping = "ghost" if ghost_clipping_supported(model) else "hooks"
        return _train_dp(
            model, xd, yd, cfg=cfg, dp=dp, anchor=anchor, mu=proximal_mu, clipping=clipping
        )


def _positive_weight(cfg: TrainingConfig, device: torch.device) -> torch.Tensor | None:
    """The run config's fixed weight of a positive row (never derived from the site's rows, which
    would make the loss itself depend on one row beyond what clipping bounds)."""
    if cfg.positive_weight == 1.0:
        return None
    return torch.tensor(cfg.positive_weight, dtype=torch.float32, device=device)


def _train_plain(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cfg: TrainingConfig,
    seed: int,
    anchor: list[torch.Tensor] | None,
    mu: float,
) -> TrainResult:
    n = x.shape[0]
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    optimizer = _base_optimizer(model, cfg)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=_positive_weight(cfg, x.device))
    steps, loss_sum = 0, 0.0
    for _ in range(cfg.local_epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]).reshape(-1), y[idx])
            prox = _proximal_term(model, anchor, mu)
            (loss if prox is None else loss + prox).backward()
            optimizer.step()
            loss_sum += float(loss.detach())
            steps += 1
    return TrainResult(
        steps=steps,
        sample_rate=min(1.0, cfg.batch_size / n),
        noise_multiplier=None,
        train_loss=loss_sum / max(steps, 1),
        n_train=n,
    )


def _train_dp(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cfg: TrainingConfig,
    dp: DPSettings,
    anchor: list[torch.Tensor] | None,
    mu: float,
    clipping: Clipping,
) -> TrainResult:
    n = x.shape[0]
    q = dp.sample_rate
    steps = dp_steps(q, cfg.local_epochs)
    # Seeded (simulation, reproducible) or the OS CSPRNG (deployment); see the module doc.
    sampler: torch.Generator | None = None
    noise_gen: torch.Generator | None = None
    if dp.noise_seed is not None:
        sampler = torch.Generator(device="cpu")
        sampler.manual_seed(int(dp.noise_seed))
        noise_gen = torch.Generator(device=x.device)
        noise_gen.manual_seed(noise_generator_seed(dp.noise_seed))

    # The loss is summed over the batch: the per-sample gradients are then the rows' own, and an
    # empty Poisson batch (possible, and it must still be a noisy step) gives a zero sum, not NaN.
    # The optimizer divides the noisy sum by q·n, not by the drawn batch size.
    ghost = clipping == "ghost"
    gsm: GradSampleModule | GradSampleModuleFastGradientClipping
    if ghost:
        gsm = _GhostGradSampleModule(
            model, loss_reduction="sum", strict=True, max_grad_norm=dp.max_grad_norm
        )
    else:
        gsm = GradSampleModule(model, loss_reduction="sum", strict=True)
    optimizer_cls: type[DPOptimizer] = _GhostDPOptimizer if ghost else DPOptimizer
    if noise_gen is None:
        optimizer_cls = with_system_noise(optimizer_cls)
    optimizer = optimizer_cls(
        _base_optimizer(model, cfg),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=q * n,
        loss_reduction="mean",
        generator=noise_gen,
    )
    params = optimizer.params
    if anchor is not None and mu > 0:
        # The proximal term depends on weights only, not on data: add its gradient after the
        # noise (post-processing), never through the per-sample clipping.
        def _prox(opt: DPOptimizer) -> None:
            for p, a in zip(params, anchor, strict=True):
                if p.grad is not None:
                    p.grad.add_(p.detach() - a, alpha=mu)

        optimizer.attach_step_hook(_prox)

    loss_fn = nn.BCEWithLogitsLoss(reduction="none", pos_weight=_positive_weight(cfg, x.device))
    loss_sum, rows_seen = 0.0, 0
    try:
        with warnings.catch_warnings():
            # Opacus's hooks fire on module outputs when the input needs no grad: expected here.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(steps):
                uniforms = (
                    SystemRandom.uniform(n) if sampler is None else torch.rand(n, generator=sampler)
                )
                mask = uniforms < q
                idx = mask.nonzero().reshape(-1).to(x.device)
                optimizer.zero_grad(set_to_none=True)
                if ghost and idx.numel() == 0:
                    # The clipped sum over no rows is zero; the step still adds the noise.
                    for p in params:
                        p.grad = torch.zeros_like(p)
                    optimizer.step()
                    continue
                losses = loss_fn(gsm(x[idx]).reshape(-1), y[idx])
                if ghost:
                    _ghost_clipped_backward(gsm, losses, params)
                else:
                    losses.sum().backward()
                optimizer.step()
                loss_sum += float(losses.detach().sum())
                rows_seen += int(idx.numel())
    finally:
        optimizer.zero_grad(set_to_none=True)
        for p in model.parameters():
            if hasattr(p, "summed_grad"):
                del p.summed_grad
        gsm.to_standard_module()  # removes hooks and every per-parameter Opacus attribute
        for module in model.modules():
            # Left on a layer only when a step stopped between forward and backward; a stale
            # batch length would corrupt the next round's per-sample gradients.
            if isinstance(getattr(module, "activations", None), list):
                del module.activations
            if isinstance(getattr(module, "max_batch_len", None), int):
                del module.max_batch_len
    return TrainResult(
        steps=steps,
        sample_rate=q,
        noise_multiplier=dp.noise_multiplier,
        train_loss=loss_sum / max(rows_seen, 1),
        n_train=n,
        randomness=SEEDED if sampler is not None else SystemRandom.name,
    )


def _ghost_clipped_backward(
    gsm: GradSampleModuleFastGradientClipping,
    losses: torch.Tensor,
    params: list[nn.Parameter],
) -> None:
    """Leave the sum of the rows' clipped gradients in ``.grad`` (Opacus's two-pass ghost clipping).

    The first pass's hooks record each row's gradient norm; its unclipped gradient is dropped.
    The second, hooks off, backpropagates each row's loss weighted by min(1, C / (norm + 1e-6)),
    the factor Opacus's hooks mode clips with. Done here rather than by Opacus's
    ``DPLossFastGradientClipping``, which ties the loss reduction to the optimizer's: here the
    loss is a sum while the optimizer divides by the expected batch size.
    """
    losses.sum().backward(retain_graph=True)
    coef = gsm.get_clipping_coef().to(losses.device)
    for p in params:
        p.grad = None
    gsm.disable_hooks()
    try:
        (losses * coef).sum().backward()
    finally:
        gsm.enable_hooks()


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
    """The model's logit for every row, float64 (the membership audit scores on these)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            out = [
                model(x[s : s + batch_size].to(device, torch.float32)).reshape(-1)
                for s in range(0, x.shape[0], batch_size)
            ]
    finally:
        model.train(was_training)
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).cpu().numpy().astype(np.float64)


def predict_scores(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
    """Sigmoid probabilities of the positive class, one float64 per row."""
    return np.asarray(expit(predict_logits(model, x, batch_size=batch_size)), dtype=np.float64)
