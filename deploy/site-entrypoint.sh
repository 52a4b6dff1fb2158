#!/usr/bin/env bash
# Entrypoint of the fedward site image (deploy/Dockerfile.site).
#
#   (no argument) or `supernode`   start the Flower SuperNode that runs fedward's ClientApp, with TLS and
#                                  node authentication, and the site's Prometheus gauges beside it
#                                  (`fedward site metrics`); SIGTERM stops both
#   anything else                  run it as a command, e.g. `fedward site ledger --site-config ...`
#
# Settings (environment; the defaults are the image's mount points, see docker-compose.yml):
#   FEDWARD_SITE_CONFIG   site config                     /etc/fedward/site.toml
#   FEDWARD_SUPERLINK     SuperLink address host:port     superlink:8000
#   FEDWARD_CA_CERT       CA that signed the SuperLink    /etc/fedward/certs/ca.pem
#   FEDWARD_NODE_KEY      the node's private key          /etc/fedward/keys/node
#   FEDWARD_NODE_CONFIG_EXTRA  more --node-config pairs, e.g. "min-cell-size=20"
#   FEDWARD_SUPERNODE_PORT     the SuperNode's local runtime API port (Flower's default: 9094)
#   FEDWARD_TRUSTED_ENTITIES   Flower trusted-entities YAML: run only app packages signed by these keys
#   FEDWARD_METRICS       1: serve the gauges (default); 0: no metrics process
#   FEDWARD_METRICS_HOST, FEDWARD_METRICS_PORT            0.0.0.0, 9101
#   FEDWARD_DEMO_DATA     a bundled dataset ("heart-disease"): write the demonstration hospital named in
#                         the site config into its data path when that file is missing. Real sites
#                         leave it unset and mount their own data read-only.
#   FEDWARD_INSECURE      1: no TLS to the SuperLink and no node authentication, to a coordinator
#                         started with FEDWARD_INSECURE=1 (local trials on one machine only; prints
#                         a warning; the node key is neither needed nor sent)
#   FEDWARD_FAST_PATH     1: start the SuperNode through `fedward-supernode`, whose ClientApps are
#                         forked from a process that imported torch once (default); 0: Flower's own
#                         `flower-supernode`, which starts and imports everything per message
#   FEDWARD_FLOWER_SHORTCUTS  1: shorten the SuperNode's fixed internal waits (default; see
#                         docs/deployment.md); 0: leave Flower's timing as it ships
#   FEDWARD_NODE_ID_FILE  where the fast path records the node id it was activated as, so that after
#                         a crash the restarted SuperNode releases the node left online and rejoins
#                         at once (default: .supernode-node-id in the site config's state folder;
#                         empty: no record)
#   FEDWARD_ACTIVATION_WAIT_S  how long the fast path retries a refused activation (HTTP 412, "Failed
#                         to activate SuperNode") before exiting (default 120; 0: exit at once)
set -euo pipefail

SITE_CONFIG="${FEDWARD_SITE_CONFIG:-/etc/fedward/site.toml}"
SUPERLINK="${FEDWARD_SUPERLINK:-superlink:8000}"
CA_CERT="${FEDWARD_CA_CERT:-/etc/fedward/certs/ca.pem}"
NODE_KEY="${FEDWARD_NODE_KEY:-/etc/fedward/keys/node}"
METRICS="${FEDWARD_METRICS:-1}"
METRICS_HOST="${FEDWARD_METRICS_HOST:-0.0.0.0}"
METRICS_PORT="${FEDWARD_METRICS_PORT:-9101}"
INSECURE="${FEDWARD_INSECURE:-0}"
FAST_PATH="${FEDWARD_FAST_PATH:-1}"
SHORTCUTS="${FEDWARD_FLOWER_SHORTCUTS:-1}"

say() { echo "fedward-site: $*" >&2; }
# fail and need_file, shared with the other entrypoint.
# shellcheck source=deploy/entrypoint-lib.sh
source "$(dirname "$0")/entrypoint-lib.sh"

demo_data() { # DATASET: the bundled hospital named by the site config, into its data path
  python - "$SITE_CONFIG" "$1" <<'PY'
import shutil
import sys
import tempfile
from pathlib import Path

from fedward.common.site_config import load_site_config
from fedward.common.datasets.bundled import write_site_files

site = load_site_config(sys.argv[1])
target = site.data_path
if not target.exists():
    with tempfile.TemporaryDirectory() as tmp:
        write_site_files(sys.argv[2], tmp, seed=0)
        source = Path(tmp) / site.name / "data.csv"
        if not source.is_file():
            names = sorted(p.name for p in Path(tmp).iterdir() if p.is_dir())
            sys.exit(
                f"fedward-site: error: FEDWARD_DEMO_DATA={sys.argv[2]} has no site '{site.name}' "
                f"(the name in {sys.argv[1]}); its sites: {', '.join(names)}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    print(f"fedward-site: wrote demonstration data '{sys.argv[2]}/{site.name}' to {target}", file=sys.stderr)
PY
}

if [ $# -gt 0 ] && [ "$1" != supernode ]; then
  exec "$@"
fi

need_file "$SITE_CONFIG" "site config"
if [ -n "${FEDWARD_DEMO_DATA:-}" ]; then
  demo_data "$FEDWARD_DEMO_DATA"
fi
# Fails early, naming the field, on a bad site config or schema (the data are read per message).
fedward config check "$SITE_CONFIG" --kind site >&2 || fail "site config $SITE_CONFIG is not valid"

# Restarts (fast path): the node id recorded in the site's own state folder lets a SuperNode restarted
# after a crash release the node its predecessor left online (docs/deployment.md, "Restarts").
if [ "$FAST_PATH" = 1 ] && [ "$INSECURE" != 1 ] && [ -z "${FEDWARD_NODE_ID_FILE+set}" ]; then
  FEDWARD_NODE_ID_FILE="$(python -c 'import sys
from fedward.common.site_config import load_site_config
print(load_site_config(sys.argv[1]).state_path / ".supernode-node-id")' "$SITE_CONFIG")" || FEDWARD_NODE_ID_FILE=""
  export FEDWARD_NODE_ID_FILE
fi

NODE_CONFIG="site-config='$SITE_CONFIG'"
if [ -n "${FEDWARD_NODE_CONFIG_EXTRA:-}" ]; then
  NODE_CONFIG="$NODE_CONFIG $FEDWARD_NODE_CONFIG_EXTRA"
fi

if [ "$FAST_PATH" = 1 ]; then
  SUPERNODE=(fedward-supernode)
  if [ "$SHORTCUTS" = 1 ]; then
    SUPERNODE+=(--flower-shortcuts)
  else
    SUPERNODE+=(--no-flower-shortcuts)
  fi
  SUPERNODE+=(--)
else
  SUPERNODE=(flower-supernode)
fi
SUPERNODE+=(--superlink "$SUPERLINK" --node-config "$NODE_CONFIG")
if [ "$INSECURE" = 1 ]; then
  # Flower's node authentication needs TLS, so an insecure SuperNode cannot authenticate at all.
  say "WARNING: FEDWARD_INSECURE=1: no TLS to the SuperLink and no node authentication; model"
  say "WARNING: updates and the node's messages travel unencrypted, and the coordinator cannot tell"
  say "WARNING: this site from any other process. For a local trial only, never across a network."
  SUPERNODE+=(--insecure)
else
  need_file "$CA_CERT" "CA certificate"
  SUPERNODE+=(--root-certificates "$CA_CERT")
  # Node authentication. Flower 1.42 derives the public key from the private key: its
  # --auth-supernode-public-key flag is deprecated and only prints a warning, so it is not passed.
  need_file "$NODE_KEY" "node private key"
  SUPERNODE+=(--auth-supernode-private-key "$NODE_KEY")
fi
if [ -n "${FEDWARD_SUPERNODE_PORT:-}" ]; then
  SUPERNODE+=(--port "$FEDWARD_SUPERNODE_PORT")
fi
if [ -n "${FEDWARD_TRUSTED_ENTITIES:-}" ]; then
  need_file "$FEDWARD_TRUSTED_ENTITIES" "trusted entities file"
  SUPERNODE+=(--trusted-entities "$FEDWARD_TRUSTED_ENTITIES")
fi

PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
STOPPING=0
trap 'STOPPING=1; say "stopping"; stop_all' TERM INT

say "starting: ${SUPERNODE[*]}"
"${SUPERNODE[@]}" &
PIDS+=("$!")
if [ "$METRICS" = 1 ]; then
  METRICS_CMD=(fedward site metrics --site-config "$SITE_CONFIG" --host "$METRICS_HOST" --port "$METRICS_PORT")
  say "starting: ${METRICS_CMD[*]}"
  "${METRICS_CMD[@]}" &
  PIDS+=("$!")
fi

# Whichever stops first (or a signal) stops the other: the container then exits and its restart
# policy decides what happens next.
set +e
wait -n "${PIDS[@]}"
status=$?
if [ "$STOPPING" = 0 ]; then
  say "a process exited with status $status; stopping the others"
  stop_all
fi
for pid in "${PIDS[@]}"; do
  wait "$pid"
done
if [ "$STOPPING" = 1 ]; then
  exit 0
fi
exit "$status"
