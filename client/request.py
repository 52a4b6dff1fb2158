"""One request to the site: the run as asked, the site as it is, its ledger and budget.

The first stage of the site's pipeline. Before any data is opened, the site resolves who it is from
its own config, checks that its ledger is intact and extends the head the coordinator last saw,
that the site has not withdrawn from the run, and that the run config and its own code are
approved; only then are its rows loaded and split. A request the site refuses learns nothing
about the data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message

from fedward.client.budget import SiteBudget
from fedward.client.ledger import Ledger, LedgerError
from fedward.client.site import PreparedSite, Site, SiteEntry, prepare, resolve_site
from fedward.client.withdrawal import refuse_if_withdrawn
from fedward.common.code_identity import code_hash
from fedward.common.config_files import validate_config
from fedward.common.errors import MessageError, PolicyError, SiteDataError
from fedward.common.models import build_model
from fedward.common.preprocessing import SharedTransform
from fedward.common.protocol import (
    ARRAYS,
    CONFIG,
    KEY_LEDGER_HEADS,
    KEY_PARENT_RUN,
    KEY_PURPOSE,
    KEY_RUN,
    KEY_RUN_ID,
    KEY_SCHEMA,
    KEY_SIM_SITES,
    KEY_SIM_STATE,
    KEY_TRANSFORM,
    PURPOSE_BASELINE,
    PURPOSE_CONTROL,
    PURPOSE_RUN,
    PURPOSE_TUNING,
    SEALED_STATE,
)
from fedward.common.run_config import RunConfig
from fedward.common.schema import DataSchema

PURPOSES = (PURPOSE_RUN, PURPOSE_TUNING, PURPOSE_CONTROL, PURPOSE_BASELINE)


@dataclass
class Request:
    """Everything one message asks of the site; built from plain parts so that other app shapes
    (the SecAgg+ mode's legacy client) can reuse the same checks and training."""

    cfg: Mapping[str, Any]
    weights: Mapping[str, torch.Tensor] | None
    context: Context
    run: RunConfig
    prepared: PreparedSite
    run_id: str
    ledger: Ledger

    @property
    def site(self) -> Site:
        return self.prepared.site

    @property
    def server_round(self) -> int:
        value = self.cfg.get("server-round", 0)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise MessageError(CONFIG, "server-round", f"must be a round number, got {value!r}")
        return int(value)

    @property
    def dataset(self) -> str:
        return self.site.dataset_id

    @property
    def purpose(self) -> str:
        purpose = str(self.cfg.get(KEY_PURPOSE, PURPOSE_RUN) or PURPOSE_RUN)
        if purpose not in PURPOSES:
            raise PolicyError(
                self.site.name, f"unknown purpose '{purpose}' for this federation"
            ).publicly("policy-refused", policy="unknown purpose")
        return purpose

    @property
    def min_cell(self) -> int:
        """The stricter of the site config's and the SuperNode operator's minimum cell size."""
        node_min = int(self.context.node_config.get("min-cell-size", 0))
        return max(self.site.policy.min_cell_size, node_min)

    def budget(self) -> SiteBudget:
        return SiteBudget(
            self.ledger,
            self.site.policy,
            site=self.site.name,
            dataset=self.dataset,
            n_rows=self.site.table.n_rows,
            accountant=self.site.policy.accountant,
            simulated=self.site.simulated_node,
        )

    def transform(self) -> SharedTransform:
        data = config_json(self.cfg, KEY_TRANSFORM)
        try:
            return SharedTransform.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MessageError(
                CONFIG, KEY_TRANSFORM, f"not a fedward preprocessing transform ({exc!r})"
            ) from None

    def features(self, transform: SharedTransform, split: str) -> tuple[torch.Tensor, np.ndarray]:
        frame, labels = self.prepared.rows(split)
        return torch.from_numpy(transform.transform(frame)), labels

    def model(self, transform: SharedTransform) -> torch.nn.Module:
        model = build_model(
            self.run.model, transform.n_outputs, self.site.schema.image_shape, seed=self.run.seed
        )
        if self.weights is None:
            raise PolicyError(self.site.name, "the coordinator sent no model weights").publicly(
                "policy-refused", policy="no weights sent"
            )
        try:
            model.load_state_dict(dict(self.weights))
        except RuntimeError as exc:
            # Torch names the layers and shapes that differ: no site data is in the text.
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
            raise MessageError(
                ARRAYS,
                None,
                "the coordinator's weights do not fit the run's model: " + " ".join(lines),
            ).publicly("weights-mismatch") from None
        return model


def state_dir(site: Site | SiteEntry, cfg: Mapping[str, Any]) -> Path:
    """A real site's ledger lives where its own config says; only simulated nodes take the run's.

    A SuperNode started with a site config never lets the coordinator move its ledger.
    """
    sim_root = str(cfg.get(KEY_SIM_STATE, "") or "")
    if site.simulated_node and sim_root:
        return Path(sim_root) / site.name
    if site.state_dir is None:
        raise PolicyError(
            site.name, "this site has no state folder for its privacy ledger"
        ).publicly("policy-refused", policy="no state folder")
    return Path(site.state_dir)


def config_json(cfg: Mapping[str, Any], key: str, default: str | None = None) -> Any:
    """A JSON value of the coordinator's ConfigRecord; a missing key or bad JSON names the key."""
    text = cfg.get(key, default)
    if text is None:
        raise MessageError(CONFIG, key, "missing")
    if not isinstance(text, str):
        raise MessageError(CONFIG, key, f"must be JSON text, got {type(text).__name__}")
    try:
        return json.loads(text or default or "null")
    except json.JSONDecodeError as exc:
        raise MessageError(CONFIG, key, f"not valid JSON ({exc})") from None


def check_ledger_head(entry: SiteEntry, cfg: Mapping[str, Any], ledger: Ledger) -> None:
    """Refuse when the ledger does not extend the head the coordinator saw last (a rollback)."""
    heads = config_json(cfg, KEY_LEDGER_HEADS, "{}")
    if not isinstance(heads, dict):
        raise MessageError(CONFIG, KEY_LEDGER_HEADS, "must be a JSON object {site: [seq, hash]}")
    seen = heads.get(entry.name)
    if not seen:
        return
    if not (
        isinstance(seen, list)
        and len(seen) == 2
        and isinstance(seen[0], int)
        and isinstance(seen[1], str)
    ):
        raise MessageError(
            CONFIG, KEY_LEDGER_HEADS, f"entry of site '{entry.name}' is not [seq, hash]"
        )
    seq, head = seen[0], seen[1]
    if ledger.hash_at(seq) != head:
        raise LedgerError(
            ledger.path,
            f"the ledger does not extend the head the coordinator last saw (entry {seq}): it was "
            "rolled back, replaced or deleted; a budget is never reset that way",
        ).publicly("ledger-rolled-back", seq=int(seq))


def check_approval(
    entry: SiteEntry, run: RunConfig, cfg: Mapping[str, Any], ledger: Ledger
) -> None:
    """Only run configs and code the site's operator approved, unless the policy auto-approves.

    A companion federation (tuning trial, federated baseline, control) is accepted when the run
    config it came from is approved and the site derives this very config from it.
    """
    if entry.policy.auto_approve:
        return
    run_hash = run.config_hash()
    where = entry.config_file or "the site config"
    if not ledger.is_approved("run-config", run_hash):
        parent_text = str(cfg.get(KEY_PARENT_RUN, "") or "")
        parent = RunConfig.from_json(parent_text) if parent_text else None
        if parent is None or not ledger.is_approved("run-config", parent.config_hash()):
            raise PolicyError(
                entry.name,
                f"run config {run_hash[:12]}… is not approved; the operator approves it with "
                f"`fedward site approve RUN.toml --site-config {where}`",
                file=entry.config_file,
            ).publicly("run-not-approved", config_hash=run_hash[:12])
        from fedward.common.run_plan import planned_configs  # scipy/sklearn: only this path

        if run_hash not in planned_configs(parent):
            raise PolicyError(
                entry.name,
                f"run config {run_hash[:12]}… is not one of the federations the approved run "
                f"config {parent.config_hash()[:12]}… asks for; refused",
                file=entry.config_file,
            ).publicly(
                "run-not-planned", config_hash=run_hash[:12], parent_hash=parent.config_hash()[:12]
            )
    code = code_hash()
    if not ledger.is_approved("code", code):
        raise PolicyError(
            entry.name,
            f"the fedward code this site runs ({code[:12]}…) is not approved; "
            "`fedward site approve` records it together with the run config",
            file=entry.config_file,
        ).publicly("code-not-approved", code_hash=code[:12])


def request_from_message(msg: Message, context: Context) -> Request:
    """The request a Message-API message makes: its model weights and its ConfigRecord."""
    weights = None
    if ARRAYS in msg.content.array_records:
        weights = msg.content.array_records[ARRAYS].to_torch_state_dict()
    if CONFIG not in msg.content.config_records:
        raise MessageError(CONFIG, None, "missing: the coordinator sent no ConfigRecord 'config'")
    return build_request(dict(msg.content.config_records[CONFIG]), weights, context)


def build_request(
    cfg: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None, context: Context
) -> Request:
    """Resolve the site from its config, check ledger, withdrawal and approval, and only then
    open its data: a request the site refuses learns nothing about the data."""
    text = cfg.get(KEY_RUN)
    if not isinstance(text, str):
        reason = "missing" if text is None else f"must be JSON text, got {type(text).__name__}"
        raise MessageError(CONFIG, KEY_RUN, reason)
    run = RunConfig.from_json(text)
    schema = validate_config(
        DataSchema, config_json(cfg, KEY_SCHEMA), "<data schema from coordinator>"
    )
    sim_sites = config_json(cfg, KEY_SIM_SITES, "[]")
    if not isinstance(sim_sites, list) or not all(isinstance(s, str) for s in sim_sites):
        raise MessageError(CONFIG, KEY_SIM_SITES, "must be a JSON list of site config paths")
    entry = resolve_site(dict(context.node_config), run, sim_sites)
    run_id = str(cfg.get(KEY_RUN_ID, "") or f"flwr-{context.run_id}")
    try:
        ledger = Ledger(state_dir(entry, cfg))
        ledger.require_valid()
        check_ledger_head(entry, cfg, ledger)
    except LedgerError as exc:
        exc.site = entry.name  # so the coordinator's records name the site, not a node id
        raise
    # A run the site withdrew from is refused like an unapproved one, whatever its approval says.
    refuse_if_withdrawn(
        ledger.dir, site=entry.name, run_id=run_id, run=run, cfg=cfg, config_file=entry.config_file
    )
    check_approval(entry, run, cfg, ledger)
    prepared = prepare(entry.load(), run, schema)
    return Request(cfg, weights, context, run, prepared, run_id, ledger)


def read_sealed_once(req: Request, context: Context, what: str) -> None:
    """The sealed test split is read once per run and purpose: by the final evaluation only."""
    key = f"{req.run_id}:{what}"
    sealed = context.state.config_records.get(SEALED_STATE)
    read = dict(sealed) if sealed is not None else {}
    if bool(read.get(key, False)):
        raise SiteDataError(
            req.site.name, f"the sealed test split was already read once for {what} in this run"
        ).publicly("sealed-read", what=what)
    read[key] = True
    context.state[SEALED_STATE] = ConfigRecord(read)
