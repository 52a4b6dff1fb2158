"""Moved to ``fedward.server.central_dp``: site-level DP is the coordinator's alone. These lines
keep server/strategies.py importing until its owner imports from the new place."""

from fedward.server.central_dp import (  # noqa: F401  (moved; importers to be updated)
    adaptive_noise_multiplier,
    default_delta,
    site_level_epsilon,
)
