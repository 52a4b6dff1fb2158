"""DP-SGD's randomness: a real site draws sampling and noise from the OS CSPRNG, a simulation stays
seeded and repeatable, and each dp-sgd ledger entry says which source it used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fedward.client import randomness
from fedward.client.app import app
from fedward.client.ledger import Ledger
from fedward.client.randomness import SEEDED, SYSTEM, SystemRandom, with_system_noise
from fedward.client.training import Clipping, DPSettings, train_local
from fedward.common.datasets.bundled import write_site_files
from fedward.common.learning_config import ModelConfig, TrainingConfig
from fedward.common.models import build_model
from fedward.common.protocol import REPLY
from fedward.common.run_config import RunConfig
from fedward.common.site_config import load_site_config
from tests.conftest import initial_arrays, make_context, make_message, wire_config

N, D = 200, 5
CFG = TrainingConfig(local_epochs=2, batch_size=32, learning_rate=0.5)
MODES: list[Clipping] = ["ghost", "hooks"]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    return x, (x[:, 0] > 0).float()


def _train(dp: DPSettings, clipping: Clipping) -> tuple[torch.Tensor, str | None]:
    x, y = _data()
    model = build_model(ModelConfig(kind="logistic"), D, seed=0)
    result = train_local(model, x, y, cfg=CFG, dp=dp, seed=0, clipping=clipping)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), result.randomness


@pytest.mark.parametrize("clipping", MODES)
def test_a_real_site_never_draws_from_torchs_generators(
    clipping: Clipping, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a noise seed, torch's Mersenne Twister is never asked: every draw is os.urandom's."""
    drawn = {"bytes": 0}
    urandom = randomness.os.urandom

    def counted(n: int) -> bytes:
        drawn["bytes"] += n
        return urandom(n)

    def forbidden(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("a real site drew from torch's seeded generator")

    monkeypatch.setattr(randomness.os, "urandom", counted)
    monkeypatch.setattr(torch, "rand", forbidden)
    monkeypatch.setattr(torch, "normal", forbidden)
    steps = 2 * round(N / 32)
    weights, source = _train(DPSettings(1.0, 1.0, 32 / N), clipping)
    assert source == SYSTEM
    # Per step: 8 bytes per row for the sampling, 4 Gaussians of 8 bytes per coordinate.
    assert drawn["bytes"] >= steps * (8 * N + 4 * 8 * (D + 1))
    assert torch.isfinite(weights).all()


@pytest.mark.parametrize("clipping", MODES)
def test_two_real_site_runs_differ_two_seeded_runs_repeat(clipping: Clipping) -> None:
    secure = [_train(DPSettings(1.0, 1.0, 32 / N), clipping) for _ in range(2)]
    seeded = [_train(DPSettings(1.0, 1.0, 32 / N, noise_seed=7), clipping) for _ in range(2)]
    assert not torch.equal(secure[0][0], secure[1][0])
    assert torch.equal(seeded[0][0], seeded[1][0])
    assert {s for _, s in secure} == {SYSTEM} and {s for _, s in seeded} == {SEEDED}


def test_system_noise_has_the_asked_spread_and_the_references_shape() -> None:
    reference = torch.zeros(400, 500, dtype=torch.float32)
    noise = SystemRandom.noise(2.5, reference)
    assert noise.shape == reference.shape and noise.dtype == torch.float32
    values = noise.double().flatten()
    assert abs(float(values.mean())) < 0.03
    assert float(values.std()) == pytest.approx(2.5, rel=0.01)
    # Gaussian tails, not a uniform's: about 4.55 % beyond two standard deviations.
    assert float((values.abs() > 5.0).double().mean()) == pytest.approx(0.0455, abs=0.004)
    assert torch.equal(SystemRandom.noise(0.0, reference), reference)


def test_system_uniforms_cover_the_unit_interval() -> None:
    u = SystemRandom.uniform(100_000).numpy()
    assert u.dtype == np.float64 and u.min() >= 0.0 and u.max() < 1.0
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 9_000
    assert SystemRandom.uniform(0).numel() == 0


def test_the_system_noise_optimizer_keeps_opacus_s_class() -> None:
    from opacus.optimizers import DPOptimizer

    cls = with_system_noise(DPOptimizer)
    assert issubclass(cls, DPOptimizer) and cls.randomness == SYSTEM


def _train_message(run: RunConfig, node_config: dict[str, Any], state: Path) -> dict[str, Any]:
    content = RecordDict(
        {
            "arrays": initial_arrays(run),
            "config": wire_config(run, server_round=1, state_dir=str(state)),
        }
    )
    reply = app(make_message(content, "train"), make_context(node_config))
    info = dict(reply.content[REPLY])
    assert info["status"] == "ok", info
    return info


def _dp_notes(ledger_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(e.note) for e in Ledger(ledger_dir).entries() if e.kind == "dp-sgd"]


def test_the_ledger_says_which_source_each_dp_entry_used(
    tmp_path: Path, heart_run: RunConfig
) -> None:
    sim_state = tmp_path / "sim-state"
    _train_message(heart_run, {"partition-id": 0, "num-partitions": 4}, sim_state)
    assert _dp_notes(sim_state / "cleveland") == [{"randomness": SEEDED}]

    config = write_site_files("heart-disease", tmp_path / "sites", seed=0)[0]
    _train_message(heart_run, {"site-config": str(config)}, tmp_path / "ignored")
    assert _dp_notes(load_site_config(config).state_path) == [{"randomness": SYSTEM}]


def test_system_normal_stands_in_for_numpys_normal() -> None:
    from fedward.client.randomness import SystemNormal

    draws = SystemNormal.normal(1.0, 3.0, size=(200, 300))
    assert draws.shape == (200, 300) and draws.dtype == np.float64
    assert float(draws.mean()) == pytest.approx(1.0, abs=0.05)
    assert float(draws.std()) == pytest.approx(3.0, rel=0.01)
    assert isinstance(SystemNormal.normal(0.0, 1.0), float)


def test_the_preprocessing_release_draws_from_the_os_at_a_real_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Gaussian release of the preprocessing aggregates: os.urandom at a real site (every
    aggregate's noise through SystemNormal), seeded in a simulation; its ledger note says which."""
    run = RunConfig.model_validate(
        {"rounds": 1, "preprocessing": {"source": "dp-aggregates", "epsilon_share": 0.2}}
    )

    def query(node_config: dict[str, Any], state: Path) -> None:
        content = RecordDict({"config": wire_config(run, state_dir=str(state))})
        reply = app(make_message(content, "query"), make_context(node_config))
        assert dict(reply.content[REPLY])["status"] == "ok"

    def notes(ledger_dir: Path) -> list[dict[str, Any]]:
        entries = Ledger(ledger_dir).entries()
        return [json.loads(e.note) for e in entries if e.kind == "gaussian-release"]

    query({"partition-id": 0, "num-partitions": 4}, tmp_path / "sim")
    assert notes(tmp_path / "sim" / "cleveland") == [
        {"release": "preprocessing aggregates", "randomness": SEEDED}
    ]
    config = write_site_files("heart-disease", tmp_path / "sites", seed=0)[0]
    drawn: list[Any] = []
    secure = randomness.SystemNormal.normal

    def counted(loc: float = 0.0, scale: float = 1.0, size: Any = None) -> Any:
        drawn.append(size)
        return secure(loc, scale, size)

    monkeypatch.setattr(randomness.SystemNormal, "normal", staticmethod(counted))
    query({"site-config": str(config)}, tmp_path / "ignored")
    assert drawn, "the real site's release did not draw from the OS CSPRNG"
    assert notes(load_site_config(config).state_path) == [
        {"release": "preprocessing aggregates", "randomness": SYSTEM}
    ]
