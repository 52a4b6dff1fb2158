"""SecAgg+ as the coordinator runs it: Flower's workflow, noted round by round, and what it guarantees.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead") is Flower's ``SecAggPlusWorkflow``, reused as it is: this module only
records what each round did (shares, threshold, how many sites the sum holds), widens the sites'
narrowed masked vectors (``fedward.common.secagg_wire``) and states, for privacy_summary.json, what
the protocol protects and what it does not. The coordinator itself is ``fedward.server.secagg_app``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from flwr.app import Message
from flwr.server import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedward.common.flower_compat import MAIN_CONFIGS_RECORD, WorkflowKey, WorkflowState
from fedward.common.run_config import RunConfig
from fedward.common.secagg_wire import widen_masked_vectors


@dataclass
class SecAggRound:
    """What SecAgg+ did in one round, as far as the coordinator can know it."""

    round: int
    sampled: int = 0
    num_shares: int = 0
    threshold: int = 0
    masked: int = 0
    unmasked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "sites_sampled": self.sampled,
            "num_shares": self.num_shares,
            "reconstruction_threshold": self.threshold,
            "sites_in_sum": self.masked if self.unmasked else 0,
            "completed": self.unmasked,
        }


class _WideningGrid:
    """The grid, with the sites' uint32 masked vectors widened to the int64 Flower's workflow
    adds (``fedward.common.secagg_wire``); everything else is the grid's own."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if not reply.has_error():
                widen_masked_vectors(reply.content)
        return replies


class RecordedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, unchanged, noting per round the shares, threshold and sum size."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds: list[SecAggRound] = []

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().setup_stage(grid, context, state)
        if not state.sampled_node_ids:
            return ok  # the strategy sampled no site (the run stopped): no SecAgg+ round
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        self.rounds.append(
            SecAggRound(
                round=int(cast(int, cfg[WorkflowKey.CURRENT_ROUND])),
                sampled=len(state.sampled_node_ids),
                num_shares=state.num_shares,
                threshold=state.threshold,
            )
        )
        return ok

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        wide = cast(Grid, _WideningGrid(grid))
        ok = super().collect_masked_vectors_stage(wide, context, state)
        if self.rounds:
            self.rounds[-1].masked = len(state.active_node_ids)
        return ok

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        ok = super().unmask_stage(grid, context, state)
        if self.rounds:
            self.rounds[-1].unmasked = ok
        return ok


def secure_aggregation_statement(
    run: RunConfig, workflow: RecordedSecAggPlus, weights_over_max: list[str]
) -> dict[str, Any]:
    """What privacy_summary.json states about SecAgg+: what it guarantees and what it does not."""
    sa = run.strategy.secagg
    warnings = []
    if weights_over_max:
        warnings.append(
            f"training-row counts above max_weight ({sa.max_weight:g}) at "
            f"{', '.join(sorted(set(weights_over_max)))}: the quantised sum may overflow"
        )
    halted = [r.round for r in workflow.rounds if not r.unmasked]
    if halted:
        warnings.append(f"SecAgg+ halted without an aggregate in round(s) {halted}")
    return {
        "enabled": True,
        "protocol": "SecAgg+ (Bell et al. 2020): flwr.server.workflow.SecAggPlusWorkflow at the "
        "coordinator, flwr.client.mod.secaggplus_mod at the sites",
        "num_shares": sa.num_shares,
        "reconstruction_threshold": sa.reconstruction_threshold,
        "guarantee": "the coordinator sees only the sum of the (training-row weighted) models of "
        "at least reconstruction_threshold sites in a round, never one site's model or update; a "
        "round with fewer sites left than the threshold stops without an aggregate",
        "does_not_protect": [
            "against a coordinator colluding with sites: the coordinator and "
            "reconstruction_threshold of a site's neighbours together can remove that site's masks",
            "against a coordinator that deviates from the protocol: Flower's SecAgg+ has no "
            "consistency-check round, so a coordinator that tells some neighbours a site dropped "
            "out and others that it is alive can unmask that site (honest-but-curious coordinator "
            "only)",
            "what the sum itself reveals (with two or three sites, a lot): each site's DP-SGD is "
            "what protects its records in the sum and in the released model",
            "values sent in the clear: each site's name, training-row count (its SecAgg+ weight), "
            "train loss and privacy figures, and tune/test metric panels and histograms",
        ],
        "no_per_update_validation": "the coordinator cannot check, clip, filter or robustly "
        "aggregate one site's update; a site sending a harmful model is not detected",
        "aggregation": f"{run.strategy.name}: weighted mean of the models by training rows "
        "(SecAgg+ sums weight x model and the weights)",
        "quantization": {
            "clipping_range": sa.clipping_range,
            "quantization_range": sa.quantization_range,
            "note": "each parameter, times its site's weight / max_weight, is clipped to "
            "[-clipping_range, clipping_range] and quantised before masking: the unmasked mean "
            "is exact to about 2 x clipping_range x max_weight / (quantization_range x training "
            "rows) per parameter and round: keep max_weight just above the largest site's rows",
        },
        "max_weight": sa.max_weight,
        "rounds": [r.to_dict() for r in workflow.rounds],
        "dp_sgd_at_sites": "unchanged: each site plans, records and enforces its own budget "
        "(see 'sites')",
        "mode_selection": "strategy.secure_aggregation = true; `fedward simulate` only in this "
        "version (flwr run ships fedward.server.app / fedward.client.app, which refuse it)",
        "warnings": warnings,
    }
