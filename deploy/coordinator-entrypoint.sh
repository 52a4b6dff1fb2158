#!/usr/bin/env bash
# Entrypoint of the fedward coordinator and HE images (deploy/Dockerfile.coordinator, Dockerfile.he).
#
#   (no argument) or `superlink`   start the Flower SuperLink (TLS, SuperNode authentication, state in
#                                  a database on the volume) and the coordinator's Prometheus metrics
#                                  beside it (`fedward coordinator metrics`); SIGTERM stops both.
#                                  The SuperLink listens twice (deploy/superlink_listeners.py): the
#                                  published port serves the Fleet API only; the Control and Runtime
#                                  APIs (`flwr`, `fedward run`, the ServerApp) listen on this
#                                  container's loopback, under a certificate from a CA the sites never
#                                  receive. Flower's open-source SuperLink authenticates no Control API
#                                  caller, so whoever reaches that listener is the operator.
#   `he`                           serve encrypted predictions of the released model
#                                  (`fedward he serve`); waits until a release and a clients file exist
#   anything else                  run it as a command, e.g. `flwr supernode list fedward` (it
#                                  reaches the Control listener through $FLWR_HOME/config.toml, which
#                                  only `superlink` writes; `docker compose exec` runs beside it)
#
# Settings (environment; the defaults are the images' mount points, see docker-compose.yml):
#   FEDWARD_STATE_DIR        coordinator state: superlink.db, runs/       /var/lib/fedward
#   FEDWARD_SSL_CERT, FEDWARD_SSL_KEY   the Fleet listener's certificate (signed by the sites' CA)
#                                                             /etc/fedward/certs/superlink.{pem,key}
#   FEDWARD_SUPERLINK_HOST, FEDWARD_SUPERLINK_PORT   the Fleet listener (published)   0.0.0.0, 8000
#   FEDWARD_CONTROL_HOST, FEDWARD_CONTROL_PORT       the Control listener          127.0.0.1, 9093
#   FEDWARD_CONTROL_CA_CERT, FEDWARD_CONTROL_CERT, FEDWARD_CONTROL_KEY
#                            its CA and certificate      /etc/fedward/certs/control-ca.pem, control.*
#   FEDWARD_FEDERATION       name of the connection written to $FLWR_HOME/config.toml, for `flwr` and
#                            `fedward run` inside this container                      fedward
#   FEDWARD_METRICS          1: serve the metrics (default); 0: no metrics process
#   FEDWARD_METRICS_HOST, FEDWARD_METRICS_PORT       0.0.0.0, 9400 (superlink) or 9103 (he)
#   FEDWARD_HE_MODEL         release folder served                                     /models/release
#   FEDWARD_HE_LISTEN        HOST:PORT of the HE service                               0.0.0.0:50051
#   FEDWARD_HE_CERT, FEDWARD_HE_KEY                  /etc/fedward/certs/he.pem, he.key
#   FEDWARD_HE_CLIENTS       clients file (tokens, budgets)                /etc/fedward/he/clients.toml
#   FEDWARD_HE_STATE         usage ledger and request log                             /var/lib/fedward/he
#   FEDWARD_HE_ARGS          more `fedward he serve` options, e.g. "--workers 8 --logit-noise 0.05"
#   FEDWARD_INSECURE         1: no TLS and no SuperNode authentication: any process that reaches
#                            the published port can join as a site (local trials on one machine
#                            only; prints a warning). The Control listener stays on loopback.
set -euo pipefail

MODE="${1:-superlink}"
INSECURE="${FEDWARD_INSECURE:-0}"
METRICS="${FEDWARD_METRICS:-1}"
METRICS_HOST="${FEDWARD_METRICS_HOST:-0.0.0.0}"

say() { echo "fedward-$MODE: $*" >&2; }
# fail and need_file, shared with the other entrypoint.
# shellcheck source=deploy/entrypoint-lib.sh
source "$(dirname "$0")/entrypoint-lib.sh"

warn_insecure() {
  say "WARNING: FEDWARD_INSECURE=1: no TLS; $1 travel unencrypted."
  say "WARNING: For a local trial only, never across a hospital network."
}

superlink() {
  local state="${FEDWARD_STATE_DIR:-/var/lib/fedward}"
  local host="${FEDWARD_SUPERLINK_HOST:-0.0.0.0}"
  local port="${FEDWARD_SUPERLINK_PORT:-8000}"
  local cert="${FEDWARD_SSL_CERT:-/etc/fedward/certs/superlink.pem}"
  local key="${FEDWARD_SSL_KEY:-/etc/fedward/certs/superlink.key}"
  local control_host="${FEDWARD_CONTROL_HOST:-127.0.0.1}"
  local control_port="${FEDWARD_CONTROL_PORT:-9093}"
  local control_ca="${FEDWARD_CONTROL_CA_CERT:-/etc/fedward/certs/control-ca.pem}"
  local control_cert="${FEDWARD_CONTROL_CERT:-/etc/fedward/certs/control.pem}"
  local control_key="${FEDWARD_CONTROL_KEY:-/etc/fedward/certs/control.key}"
  local federation="${FEDWARD_FEDERATION:-fedward}"
  local metrics_port="${FEDWARD_METRICS_PORT:-9400}"
  mkdir -p "$state/runs"
  if [ "$control_port" = "$port" ]; then
    fail "FEDWARD_CONTROL_PORT and FEDWARD_SUPERLINK_PORT are both $port: the Control API needs its own listener"
  fi

  # Flower's arguments after `--`; the Fleet listener's before it.
  local link=(python "$(dirname "$0")/superlink_listeners.py" --fleet-host "$host" --fleet-port "$port")
  local flower=(--host "$control_host" --port "$control_port" --database "$state/superlink.db"
    --disable-runtime-dependency-installation)
  # The connection `flwr run`, `flwr supernode register` and `fedward run` use inside this container:
  # the Control listener, verified against the control-plane CA.
  local connect_host="$control_host"
  case "$connect_host" in 0.0.0.0 | "::" | "[::]") connect_host=127.0.0.1 ;; esac
  local home="${FLWR_HOME:-$HOME/.flwr}"
  mkdir -p "$home"
  {
    echo "[superlink]"
    echo "default = \"$federation\""
    echo
    echo "[superlink.$federation]"
    echo "address = \"$connect_host:$control_port\""
    if [ "$INSECURE" = 1 ]; then
      echo "insecure = true"
    else
      echo "root-certificates = \"$control_ca\""
    fi
  } >"$home/config.toml"

  if [ "$INSECURE" = 1 ]; then
    warn_insecure "model updates, run configs and node registrations"
    say "WARNING: SuperNode authentication is OFF: any process that reaches port $port joins the"
    say "WARNING: federation as a site and receives the model. Never open that port beyond this machine."
    flower+=(--insecure)
  else
    need_file "$cert" "SuperLink (Fleet) certificate"
    need_file "$key" "SuperLink (Fleet) private key"
    need_file "$control_ca" "control-plane CA certificate"
    need_file "$control_cert" "Control API certificate"
    need_file "$control_key" "Control API private key"
    link+=(--fleet-ssl-certfile "$cert" --fleet-ssl-keyfile "$key")
    flower+=(--enable-supernode-auth --ssl-ca-certfile "$control_ca" --ssl-certfile "$control_cert"
      --ssl-keyfile "$control_key")
  fi
  link+=(-- "${flower[@]}")

  PIDS=()
  STOPPING=0
  trap 'STOPPING=1; say "stopping"; stop_all' TERM INT
  say "starting: ${link[*]}"
  "${link[@]}" &
  PIDS+=("$!")
  if [ "$METRICS" = 1 ]; then
    local metrics=(fedward coordinator metrics --runs "$state/runs" --host "$METRICS_HOST"
      --port "$metrics_port")
    say "starting: ${metrics[*]}"
    "${metrics[@]}" &
    PIDS+=("$!")
  fi
  supervise
}

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}

# Whichever process stops first (or a signal) stops the others: the container then exits and its
# restart policy decides what happens next.
supervise() {
  local status pid
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
}

he() {
  local model="${FEDWARD_HE_MODEL:-/models/release}"
  local clients="${FEDWARD_HE_CLIENTS:-/etc/fedward/he/clients.toml}"
  local cert="${FEDWARD_HE_CERT:-/etc/fedward/certs/he.pem}"
  local key="${FEDWARD_HE_KEY:-/etc/fedward/certs/he.key}"
  local serve=(fedward he serve --model "$model" --listen "${FEDWARD_HE_LISTEN:-0.0.0.0:50051}"
    --clients "$clients" --state "${FEDWARD_HE_STATE:-/var/lib/fedward/he}")
  if [ "$INSECURE" = 1 ]; then
    warn_insecure "API tokens and ciphertexts"
    serve+=(--insecure)
  else
    need_file "$cert" "HE service certificate"
    need_file "$key" "HE service private key"
    serve+=(--tls-cert "$cert" --tls-key "$key")
  fi
  if [ "$METRICS" = 1 ]; then
    serve+=(--metrics-port "${FEDWARD_METRICS_PORT:-9103}" --metrics-host "$METRICS_HOST")
  fi
  if [ -n "${FEDWARD_HE_ARGS:-}" ]; then
    # shellcheck disable=SC2206 # split on purpose: a list of options
    serve+=(${FEDWARD_HE_ARGS})
  fi

  # Nothing to serve until a model passed the release gate and a clinic has a token: wait, saying
  # what is missing, instead of restarting in a loop.
  NAP=""
  trap 'say "stopping"; [ -z "$NAP" ] || kill "$NAP" 2>/dev/null; exit 0' TERM INT
  local waited=0
  while [ ! -f "$model/MANIFEST.json" ] || [ ! -f "$clients" ]; do
    if [ $((waited % 300)) = 0 ]; then
      [ -f "$model/MANIFEST.json" ] ||
        say "waiting for a release at $model (export one and link it, see docs/deployment.md)"
      [ -f "$clients" ] ||
        say "waiting for the clients file $clients (fedward he add-client NAME --clients $clients)"
    fi
    sleep 5 &
    NAP=$!
    wait "$NAP" || true
    waited=$((waited + 5))
  done
  trap - TERM INT
  say "starting: ${serve[*]}"
  exec "${serve[@]}"
}

case "$MODE" in
  superlink) superlink ;;
  he) he ;;
  *) exec "$@" ;;
esac
