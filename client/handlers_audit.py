"""The site's membership-audit handler: attack the model it is sent with its own members and
non-members, and release only aggregates.

The audit's own models never leave the site and spend no release budget; the sealed test split is
not read. A DP run is audited against the privacy plan the site recorded for it.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context, Message

from fedward.client.reply_encoding import SiteReply
from fedward.client.reply_fields import AUDIT_MODELS, NON_DP_OUTPUTS
from fedward.client.request import request_from_message, state_dir
from fedward.client.seeds import derive_seed
from fedward.common.errors import MessageError, PolicyError
from fedward.common.protocol import CONFIG, KEY_AUDIT_MODEL, KEY_PARENT_RUN
from fedward.common.run_config import RunConfig


def audit(msg: Message, context: Context) -> SiteReply:
    """Attack the model it is sent with this site's members and non-members; release aggregates.

    The audit's own models (LiRA references, the canary model) are trained here as this site
    trained for the run and never leave; they spend no release budget. The sealed test split is
    not read.
    """
    from fedward.client.site_audit import AuditMechanism, record_latest, run_audit

    req = request_from_message(msg, context)
    site, run = req.site, req.run
    if str(req.cfg.get(KEY_AUDIT_MODEL, "run") or "run") not in AUDIT_MODELS:
        raise MessageError(CONFIG, KEY_AUDIT_MODEL, "not one of the models a site audits")
    # A companion's config resets its [audit] section: the approved parent's settings govern.
    parent_text = str(req.cfg.get(KEY_PARENT_RUN, "") or "")
    settings = RunConfig.from_json(parent_text).audit if parent_text else run.audit
    if not settings.enabled:
        raise PolicyError(
            site.name, "the run config has the membership audit switched off"
        ).publicly("policy-refused", policy="membership audit switched off")
    transform = req.transform()
    model = req.model(transform)
    x_m, y_m = req.features(transform, "train")
    x_n, y_n = req.features(transform, "audit")
    budget = req.budget()
    plan = budget.existing_plan(req.run_id) if run.privacy.dp else None
    if run.privacy.dp and plan is None:
        raise PolicyError(
            site.name,
            f"run {req.run_id} has no privacy plan in this site's ledger: nothing to audit",
        ).publicly("policy-refused", policy="no privacy plan for this run")
    mechanism = AuditMechanism(
        run, transform.n_outputs, site.schema.image_shape, plan, settings=settings
    )
    name = str(req.cfg.get(KEY_AUDIT_MODEL, "run") or "run")
    public = run_audit(
        model,
        mechanism,
        (x_m.numpy(), y_m),
        (x_n.numpy(), y_n),
        delta=plan.run_delta if plan is not None else budget.run_delta(run),
        min_cell=req.min_cell,
        seed=derive_seed(run.seed, site.name, name, "audit"),
    )
    record_latest(state_dir(site, req.cfg), req.run_id, name, public)
    # A figure the site's size cannot support is absent (the notes say why), never a null.
    info: dict[str, Any] = {k: v for k, v in public.items() if v is not None}
    info["audit_model"] = name
    info["non_dp_outputs"] = [NON_DP_OUTPUTS[f"audit-{name}"]]
    return SiteReply(site.name, info, req.min_cell)
