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
KEY_RUN_ID = "fedward.run-id"  # fedward's own run id: kept when a run is resumed
KEY_ATTEMPT = "fedward.attempt"  # one id per round attempt: a retried round is a new attempt
KEY_LEDGER_HEADS = (
    "fedward.ledger-heads"  # {site: [seq, hash]} last ledger heads the coordinator saw
)
KEY_SIM_STATE = (
    "fedward.sim-state-dir"  # simulation only: root of the simulated sites' state folders
)

# Reply statuses.
STATUS_OK = "ok"
STATUS_REFUSED = "refused"  # the site decided not to take part (data, policy, budget)
STATUS_ERROR = "error"  # something broke at the site; reported, never fatal to the run

# Keys of a node's context.state (per node, per run). Privacy state never lives here: it is in the
# site's ledger, which survives process restarts.
SEALED_STATE = "fedward.sealed"

# The privacy figures a site reports with every update (floats), read the same way by every coordinator.
PRIVACY_FLOATS = (
    "epsilon",
    "delta",
    "epsilon_lifetime",
    "delta_lifetime",
    "epsilon_budget",
    "epsilon_remaining",
    "epsilon_tuning",
    "epsilon_model",
    "noise_multiplier",
    "sample_rate",
)

# Why the coordinator asks for a federation: the run itself, a tuning trial or a control. A simulated
# site records tuning trials in its ledger but does not hold them against its budget (the report
# states their ε); a real site accounts and enforces every purpose alike.
KEY_PURPOSE = "fedward.purpose"
# The run config as the coordinator was asked to run it; a companion federation's config must be one
# the site can derive from it (fedward.common.run_plan), and the site's approval of it covers them.
KEY_PARENT_RUN = "fedward.parent-run"
PURPOSE_RUN = "run"
PURPOSE_TUNING = "tuning"
PURPOSE_CONTROL = "control"
PURPOSE_BASELINE = "baseline"

# `evaluate.baselines`: the site tunes and tests the scikit-learn suite and compares it with the
# final model it is sent, on its sealed test split; only metrics leave.
MSG_BASELINES = "evaluate.baselines"
KEY_BASELINES = "fedward.baselines"  # JSON: {"families": [...], "budget": n, "search": "random"}
BASELINE_PREFIX = "baseline_"  # reply keys: baseline_<family>_<metric>
FEDERATED_LOGISTIC = "federated_logistic"  # the federated baseline, compared at the site too
ARRAYS_FEDERATED_LOGISTIC = "arrays.federated_logistic"  # its final weights, sent with the request

# `evaluate.audit`: the site attacks the model it is sent (members: its training rows; non-members:
# its audit split) and releases only the audit's aggregates (`mia_*` keys).
MSG_AUDIT = "evaluate.audit"
KEY_AUDIT_MODEL = "fedward.audit-model"  # which model is audited: "run" or a companion's name

# `query.profile`: the site's training-data profile for the model card (non-DP, small cells suppressed).
MSG_PROFILE = "query.profile"

# Per site, what privacy_summary.json states (and the model card copies as it is).
PRIVACY_SUMMARY_KEYS = (
    "site",
    "status",
    "reason",
    "dataset",
    "accountant",
    "privacy_unit",
    "epsilon",
    "delta",
    "epsilon_lifetime",
    "delta_lifetime",
    "epsilon_budget",
    "epsilon_remaining",
    "epsilon_tuning",
    "epsilon_model",
    "epsilon_bound",
    "trained_rounds",
    "companion_epsilon",
    "noise_multiplier",
    "sample_rate",
    "multi_row_patients",
    "refusals",
)

# A site's DP-noised training-split aggregates (one JSON text) for a DP-fitted shared transform.
KEY_PREPROCESSING_AGGREGATES = "preprocessing_aggregates"
