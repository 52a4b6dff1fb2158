"""Names of the records and keys the coordinator and the sites exchange.

One place for the wire vocabulary, so the ServerApp, the ClientApp and the egress guard agree.
"""

from __future__ import annotations

# Record names in a message's RecordDict.
ARRAYS = "arrays"  # ArrayRecord: model weights (the only array record that may leave a site)
METRICS = "metrics"  # MetricRecord: scalar aggregates
CONFIG = "config"  # ConfigRecord the coordinator sends (Flower strategies use this name)
REPLY = "fedward"  # ConfigRecord a site sends: site name, status, privacy figures, messages

# Keys of the coordinator's ConfigRecord.
KEY_RUN = "fedward.run"  # run config as JSON; the site validates it itself
KEY_SCHEMA = "fedward.schema"  # the run's data schema as JSON; sites must match it
KEY_TRANSFORM = "fedward.transform"  # the frozen shared preprocessing as JSON
KEY_SIM_SITES = "fedward.sim-sites"  # simulation only: site config paths, by partition id
KEY_SPLIT = "fedward.split"  # evaluation split: "tune" each round, "test" once at the end

# Reply statuses.
STATUS_OK = "ok"
STATUS_REFUSED = "refused"  # the site decided not to take part (data, policy, budget)
STATUS_ERROR = "error"  # something broke at the site; reported, never fatal to the run

# Keys of a node's context.state (per node, per run).
DP_STATE = "fedward.dp"
SEALED_STATE = "fedward.sealed"
