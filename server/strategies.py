"""Flower's own strategies, chosen by name in the run config, and Flower's central-DP wrappers around
them. fedward wraps them; it never forks them.

Robust aggregation against a poisoning site is Flower's too: FedMedian and FedTrimmedAvg (Yin et al.
2018, coordinate-wise median and trimmed mean), Krum and MultiKrum (Blanchard et al. 2017, the
update(s) closest to their nearest neighbours). Every update is first checked by
``fedward.server.update_validation`` inside ``SiteTracking``.

With ``privacy.central.enabled`` the chain is, outermost first::

    SiteTracking -> CentralDPAccounting -> DifferentialPrivacyServerSide{Fixed,Adaptive}Clipping -> FedAvg

SiteTracking stays outermost, so refusals and failures are filtered before Flower's DP wrapper
counts replies. ``CentralDPAccounting`` (here) changes no arithmetic of Flower's: it gives every
site the same weight in the mean (the noise z·C/m is sized for an unweighted mean of m clipped
updates; a weighted mean would let one large site move the model by more than C/m) and records,
round by round, how many sites the released mean really had and which clipping norm the noise
used, so the site-level ε reported is the one the run actually had (``fedward.server.central_dp``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from fedward.common.privacy_config import CentralDPConfig
from fedward.common.strategy_config import StrategyConfig
from fedward.server.central_dp import adaptive_noise_multiplier, default_delta, site_level_epsilon

CentralDPWrapper = (
    DifferentialPrivacyServerSideFixedClipping | DifferentialPrivacyServerSideAdaptiveClipping
)


class _Sampling(TypedDict):
    """The sampling keywords every Flower strategy takes, with their types."""

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int


def flower_strategy(cfg: StrategyConfig) -> Strategy:
    """The Flower strategy the run config names, with fedward's sampling settings."""
    common: _Sampling = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": 1.0,
        "min_train_nodes": cfg.min_sites,
        "min_evaluate_nodes": cfg.min_sites,
        "min_available_nodes": cfg.min_sites,
    }
    if cfg.name == "fedavg":
        return FedAvg(**common)
    if cfg.name == "fedprox":
        return FedProx(proximal_mu=cfg.proximal_mu, **common)
    if cfg.name == "fedadam":
        return FedAdam(eta=cfg.server_learning_rate, **common)
    # FedOpt's adaptive server steps (Reddi et al. 2021); FLamby found FedAdagrad and FedYogi
    # ahead of FedAvg on the heart-disease hospitals. Both keep m_t/v_t, which checkpoints save.
    if cfg.name == "fedadagrad":
        return FedAdagrad(eta=cfg.server_learning_rate, **common)
    if cfg.name == "fedyogi":
        return FedYogi(eta=cfg.server_learning_rate, **common)
    if cfg.name == "fedmedian":
        return FedMedian(**common)
    if cfg.name == "fedtrimmedavg":
        return FedTrimmedAvg(beta=cfg.trim_beta, **common)
    if cfg.name == "krum":
        return Krum(num_malicious_nodes=cfg.malicious_sites, **common)
    if cfg.name == "multikrum":
        return MultiKrum(
            num_malicious_nodes=cfg.malicious_sites,
            num_nodes_to_select=cfg.multikrum_select,
            **common,
        )
    raise ValueError(f"unknown strategy '{cfg.name}'")


def sampled_sites(cfg: StrategyConfig, num_sites: int) -> int:
    """Sites FedAvg's ``configure_train`` samples per round out of ``num_sites`` connected ones.

    Flower's rule (``flwr.serverapp.strategy.FedAvg.configure_train``):
    ``max(int(num_sites * fraction_train), min_train_nodes)``.
    """
    if num_sites < 1:
        raise ValueError(f"the federation needs at least one site, got {num_sites}")
    sampled = max(int(num_sites * cfg.fraction_train), cfg.min_sites)
    if sampled > num_sites:
        raise ValueError(
            f"strategy.min_sites ({cfg.min_sites}) is larger than the federation's "
            f"{num_sites} site(s): no round could be sampled"
        )
    return sampled


def build_strategy(
    cfg: StrategyConfig, central: CentralDPConfig | None = None, *, num_sites: int | None = None
) -> Strategy:
    """Flower's strategy, wrapped in Flower's server-side DP wrapper when central DP is on.

    ``num_sites`` is the federation's size N (the population sites are sampled from); it is needed
    only with central DP, where the wrapper's ``num_sampled_clients`` is ``sampled_sites(cfg, N)``.
    """
    if cfg.secure_aggregation:
        raise ValueError(
            "strategy.secure_aggregation runs Flower's legacy SecAgg+ workflow "
            "(fedward.server.secagg_app), not a Message-API strategy; in this version only "
            "`fedward simulate` runs it"
        )
    inner = flower_strategy(cfg)
    if central is None or not central.enabled:
        return inner
    if num_sites is None:
        raise ValueError("central DP needs the number of sites in the federation (num_sites)")
    if (
        not isinstance(inner, FedAvg)
        or inner.__class__.aggregate_train is not FedAvg.aggregate_train
    ):
        raise ValueError(
            f"central DP needs a strategy that releases the mean of the sites' models, "
            f"not '{cfg.name}'"
        )
    sampled = sampled_sites(cfg, num_sites)
    wrapper: CentralDPWrapper
    if central.adaptive:
        wrapper = DifferentialPrivacyServerSideAdaptiveClipping(
            inner,
            noise_multiplier=central.noise_multiplier,
            num_sampled_clients=sampled,
            initial_clipping_norm=central.clipping_norm,
            target_clipped_quantile=central.target_clipped_quantile,
            clip_norm_lr=central.clip_norm_lr,
            clipped_count_stddev=central.clipped_count_stddev,
        )
    else:
        wrapper = DifferentialPrivacyServerSideFixedClipping(
            inner,
            noise_multiplier=central.noise_multiplier,
            clipping_norm=central.clipping_norm,
            num_sampled_clients=sampled,
        )
    return CentralDPAccounting(wrapper, config=central, num_sites=num_sites)


@dataclass(frozen=True)
class Release:
    """One round's released mean: how many sites were in it and how much noise it really had."""

    round: int
    sites: int
    clipping_norm: float
    noise_clipping_norm: float
    effective_noise_multiplier: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "sites_in_mean": self.sites,
            "clipping_norm": round(self.clipping_norm, 6),
            "noise_clipping_norm": round(self.noise_clipping_norm, 6),
            "effective_noise_multiplier": round(self.effective_noise_multiplier, 6),
        }


class CentralDPAccounting(Strategy):
    """Equal site weights under Flower's central-DP wrapper, and a record of every release."""

    def __init__(self, strategy: CentralDPWrapper, *, config: CentralDPConfig, num_sites: int):
        if not isinstance(strategy, CentralDPWrapper):
            raise ValueError("CentralDPAccounting wraps one of Flower's server-side DP wrappers")
        if num_sites < strategy.num_sampled_clients:
            raise ValueError(
                f"num_sites ({num_sites}) is smaller than the sites sampled per round "
                f"({strategy.num_sampled_clients})"
            )
        inner = strategy.strategy
        if not isinstance(inner, FedAvg):
            raise ValueError("central DP wraps a FedAvg-family strategy")
        self.strategy = strategy
        self.config = config
        self.num_sites = num_sites
        self.weight_key = inner.weighted_by_key
        self.releases: list[Release] = []

    # ---- delegation -------------------------------------------------------------------------------

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    # ---- training ---------------------------------------------------------------------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for msg in replies:
            if msg.has_content():
                for record in msg.content.metric_records.values():
                    record[self.weight_key] = 1.0
        clipping_norm = float(self.strategy.clipping_norm)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            # Flower's adaptive wrapper updates its norm before it adds the noise, so the noise
            # may be sized for a norm other than the one the updates were clipped to.
            noise_norm = float(self.strategy.clipping_norm)
            self.releases.append(
                Release(
                    round=server_round,
                    sites=len(replies),
                    clipping_norm=clipping_norm,
                    noise_clipping_norm=noise_norm,
                    effective_noise_multiplier=self._effective(
                        len(replies), noise_norm / clipping_norm
                    ),
                )
            )
        return arrays, metrics

    def _effective(self, sites: int, noise_ratio: float) -> float:
        """The noise multiplier relative to one site's largest effect on the released mean.

        A mean of k < m sites moves by up to C/k, while Flower's noise is sized for C/m.
        More sites than m would mean more noise than needed: counted conservatively as m.
        """
        share = min(1.0, sites / self.strategy.num_sampled_clients)
        z_model = float(self.strategy.noise_multiplier) * share * noise_ratio
        if isinstance(self.strategy, DifferentialPrivacyServerSideAdaptiveClipping):
            return adaptive_noise_multiplier(z_model, float(self.strategy.clipped_count_stddev))
        return z_model

    # ---- the privacy statement ------------------------------------------------------------------

    @property
    def sample_rate(self) -> float:
        return self.strategy.num_sampled_clients / self.num_sites

    @property
    def delta(self) -> float:
        return self.config.delta if self.config.delta is not None else default_delta(self.num_sites)

    def report(self, rounds: int) -> dict[str, Any]:
        """What privacy_summary.json states about site-level DP: ε planned and ε as run."""
        cfg, q, delta = self.config, self.sample_rate, self.delta
        planned = site_level_epsilon([(cfg.noise_multiplier, q, rounds)], delta)
        as_run = site_level_epsilon(
            [(r.effective_noise_multiplier, q, 1) for r in self.releases], delta
        )
        short = [r for r in self.releases if r.sites < self.strategy.num_sampled_clients]
        warnings: list[str] = []
        if self.num_sites < 20:
            warnings.append(
                f"only {self.num_sites} sites: a site-level guarantee over so few sites is weak "
                f"(δ = {delta:.3g}); it becomes meaningful with tens to hundreds of sites"
            )
        if short:
            warnings.append(
                f"{len(short)} round(s) averaged fewer sites than the {self.strategy.num_sampled_clients} "
                "sampled (refusals or failures) while the noise stayed sized for "
                f"{self.strategy.num_sampled_clients}: those rounds had less noise per site, "
                "see epsilon_as_run"
            )
        if isinstance(self.strategy, DifferentialPrivacyServerSideAdaptiveClipping) and any(
            r.noise_clipping_norm < r.clipping_norm for r in self.releases
        ):
            warnings.append(
                "Flower's adaptive wrapper adds the noise with the clipping norm already updated "
                "for the next round; rounds where it shrank had less noise than configured and "
                "are accounted so in epsilon_as_run"
            )
        mechanism = (
            "flwr.serverapp.strategy.DifferentialPrivacyServerSideAdaptiveClipping"
            if cfg.adaptive
            else "flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping"
        )
        return {
            "enabled": True,
            "mechanism": mechanism,
            "privacy_unit": "site (all records of one site together)",
            "guarantee": "(ε, δ)-DP for adding or removing one whole site: every global model the "
            "coordinator releases (each round's and the final one) is almost as likely with or "
            "without any one site's data. The protected 'user' is a whole site, so the figure is "
            "meaningful only with many sites (tens to hundreds). It composes with each site's "
            "sample-level ε from DP-SGD; it does not replace it.",
            "does_not_protect": [
                "against the coordinator: it clips and noises on the server, so it sees each "
                "site's un-noised update (each site's own DP-SGD is what holds there)",
                "per-site metrics, losses, evaluation panels and histograms (listed as non-DP "
                "outputs in run_record.json)",
            ],
            "noise_multiplier": cfg.noise_multiplier,
            "clipping_norm": cfg.clipping_norm,
            "adaptive": cfg.adaptive,
            **(
                {
                    "update_noise_multiplier": float(self.strategy.noise_multiplier),
                    "clipped_count_stddev": float(self.strategy.clipped_count_stddev),
                    "final_clipping_norm": float(self.strategy.clipping_norm),
                    "target_clipped_quantile": cfg.target_clipped_quantile,
                    "clip_norm_lr": cfg.clip_norm_lr,
                    "adaptive_note": "Flower 1.41 steers the norm on the noisy fraction of "
                    "clipped updates (Andrew et al. steer on the unclipped fraction): when more "
                    "than target_clipped_quantile are clipped, the norm shrinks further. This "
                    "changes utility, not the accounting above.",
                }
                if isinstance(self.strategy, DifferentialPrivacyServerSideAdaptiveClipping)
                else {}
            ),
            "aggregation": "unweighted mean of the sampled sites' clipped updates (each site "
            "weight 1), the mean Flower's noise std z·C/m is sized for",
            "num_sites": self.num_sites,
            "num_sites_source": "configured (privacy.central.num_sites)"
            if cfg.num_sites is not None
            else "the sites connected when the run started",
            "sites_sampled_per_round": self.strategy.num_sampled_clients,
            "sample_rate": q,
            "rounds": rounds,
            "delta": delta,
            "delta_source": "configured" if cfg.delta is not None else "1 / (10 x number of sites)",
            "accountant": "opacus.accountants.RDPAccountant",
            "epsilon": planned,
            "epsilon_as_run": as_run,
            "rounds_released": len(self.releases),
            "releases": [r.to_dict() for r in self.releases],
            "assumptions": [
                "Each round samples m of N sites; it is accounted as Poisson subsampling with "
                "rate q = m/N, which Flower's fixed-size sampling without replacement only "
                "approximates (exact when q = 1: every site, every round).",
                "One site changes the mean of m clipped updates by at most C/m (add/remove-one-"
                "site neighbouring, fixed denominator m), as Flower's noise std z·C/m assumes.",
                "N is the federation's size: configured, or the sites connected at the start.",
            ],
            "warnings": warnings,
        }
