"""The site's descriptive releases of its training split: the model card's training profile, and
the preprocessing aggregates released through the Gaussian mechanism.

The aggregates are a ledger entry at sample rate 1, committed by the privacy transaction before
they leave, so training's noise is then sized for what is left of the run's ε.
"""

from __future__ import annotations

import json
from typing import Any, cast

import numpy as np
from flwr.app import Context, Message

from fedward.client.privacy_transaction import commit_preprocessing_release, privacy_info
from fedward.client.randomness import SystemNormal
from fedward.client.reply_encoding import SiteReply
from fedward.client.reply_fields import NON_DP_OUTPUTS
from fedward.client.request import request_from_message
from fedward.client.seeds import derive_seed
from fedward.client.splits import SPLIT_NAMES
from fedward.common.preprocessing import site_aggregates
from fedward.common.protocol import KEY_PREPROCESSING_AGGREGATES


def profile(msg: Message, context: Context) -> SiteReply:
    """The training split's profile for the model card: sizes, prevalence, missingness, summaries."""
    from fedward.client.profile import site_profile

    req = request_from_message(msg, context)
    site = req.site
    frame, labels = req.prepared.rows("train")
    sizes = {name: len(getattr(req.prepared.splits, name)) for name in SPLIT_NAMES}
    summary = site_profile(frame, labels, sizes, site.schema, req.min_cell)
    info: dict[str, Any] = {
        "training_profile": json.dumps(summary, sort_keys=True),
        "non_dp_outputs": [NON_DP_OUTPUTS["profile"]],
    }
    return SiteReply(site.name, info, req.min_cell)


def query(msg: Message, context: Context) -> SiteReply:
    """Preprocessing aggregates of the training split, released through the Gaussian mechanism.

    Sums are clipped to the schema's declared ranges and categories (never derived from the data);
    the release is a ledger entry at sample rate 1, committed before it leaves, so training's noise
    is then sized for what is left of the run's ε.
    """
    req = request_from_message(msg, context)
    site, run = req.site, req.run
    frame, _ = req.prepared.rows("train")
    budget = req.budget()
    sigma = budget.preprocessing_sigma(run)
    delta = commit_preprocessing_release(req, budget, sigma)
    # As for DP-SGD's noise: seeded only in simulation; a real site draws from the OS CSPRNG.
    rng = cast(
        np.random.Generator,
        np.random.default_rng(derive_seed(run.seed, site.name, "preprocessing"))
        if site.simulated_node
        else SystemNormal(),
    )
    aggregates = site_aggregates(frame, site.schema, noise_multiplier=sigma, rng=rng)
    info = privacy_info(req, budget, delta)
    info.update(
        {
            KEY_PREPROCESSING_AGGREGATES: json.dumps(aggregates),
            "noise_multiplier": float(sigma),
            "non_dp_outputs": []
            if run.privacy.delta is not None
            else [NON_DP_OUTPUTS["delta-default"]],
        }
    )
    return SiteReply(site.name, info, req.min_cell)
