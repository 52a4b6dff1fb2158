#!/usr/bin/env bash
# Makes the certificates and keys of a fedward deployment with openssl and ssh-keygen:
#
#   OUT/ca.pem, OUT/ca.key                  a private certificate authority (keep ca.key offline)
#   OUT/superlink.pem, OUT/superlink.key    the SuperLink's TLS certificate (SAN: superlink, localhost,
#                                           127.0.0.1 and every --superlink-name)
#   OUT/he.pem, OUT/he.key                  the encrypted-inference service's TLS certificate (SAN: he,
#                                           localhost, 127.0.0.1 and every --he-name)
#   OUT/control-ca.pem, OUT/control-ca.key  a second CA, for the coordinator's side only: never give
#                                           control-ca.pem to a site (keep control-ca.key offline)
#   OUT/control.pem, OUT/control.key        the SuperLink's Control API certificate, signed by
#                                           control-ca (SAN: localhost, 127.0.0.1, every --control-name)
#   OUT/keys/SITE, OUT/keys/SITE.pub        each site's SuperNode authentication key pair (ECDSA P-384,
#                                           OpenSSH format, as Flower's node authentication expects)
#
# Private keys are written with mode 600. Existing files are never overwritten unless --force is given;
# with it they are rewritten in place, so that containers that bind-mount them see the new contents
# after a restart. See docs/deployment.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/make-certs.sh OUT_DIR [options]

  --sites A,B,...         sites that get a node key pair
                          (default: cleveland,hungary,switzerland,va-long-beach)
  --superlink-name NAME   one more DNS name or IP address for the SuperLink certificate (repeatable)
  --he-name NAME          one more DNS name or IP address for the HE service certificate (repeatable)
  --control-name NAME     one more DNS name or IP address for the Control API certificate (repeatable)
  --days N                validity of the server certificates in days (default 825; the CA: 3650)
  --keys-only             make only the sites' node key pairs (add a site, or rotate its key)
  --force                 overwrite existing keys and certificates
  -h, --help              this text
EOF
}

die() {
  echo "make-certs: $*" >&2
  exit 2
}

OUT=""
SITES="cleveland,hungary,switzerland,va-long-beach"
SUPERLINK_NAMES=(superlink localhost 127.0.0.1)
HE_NAMES=(he localhost 127.0.0.1)
CONTROL_NAMES=(localhost 127.0.0.1)
DAYS=825
CA_DAYS=3650
KEYS_ONLY=0
FORCE=0

while [ $# -gt 0 ]; do
  case "$1" in
    --sites) [ $# -ge 2 ] || die "--sites needs a value"; SITES="$2"; shift 2 ;;
    --superlink-name) [ $# -ge 2 ] || die "--superlink-name needs a value"; SUPERLINK_NAMES+=("$2"); shift 2 ;;
    --he-name) [ $# -ge 2 ] || die "--he-name needs a value"; HE_NAMES+=("$2"); shift 2 ;;
    --control-name) [ $# -ge 2 ] || die "--control-name needs a value"; CONTROL_NAMES+=("$2"); shift 2 ;;
    --days) [ $# -ge 2 ] || die "--days needs a value"; DAYS="$2"; shift 2 ;;
    --keys-only) KEYS_ONLY=1; shift ;;
    --force) FORCE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option '$1'" ;;
    *) [ -z "$OUT" ] || die "one output folder only (got '$OUT' and '$1')"; OUT="$1"; shift ;;
  esac
done

[ -n "$OUT" ] || { usage >&2; die "give the output folder, e.g. deploy/make-certs.sh deploy/certs"; }
[[ "$DAYS" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive whole number, not '$DAYS'"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed"
command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is not installed (package openssh-client)"

IFS=',' read -r -a SITE_LIST <<<"$SITES"
[ "${#SITE_LIST[@]}" -gt 0 ] || die "--sites is empty"
for site in "${SITE_LIST[@]}"; do
  [[ "$site" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
    die "site name '$site': use letters, digits, '.', '_' or '-', starting with a letter or digit"
done

# Every file this call would write; refuse before writing anything if one exists.
TARGETS=()
if [ "$KEYS_ONLY" = 0 ]; then
  TARGETS+=(ca.pem ca.key superlink.pem superlink.key he.pem he.key)
  TARGETS+=(control-ca.pem control-ca.key control.pem control.key)
fi
for site in "${SITE_LIST[@]}"; do
  TARGETS+=("keys/$site" "keys/$site.pub")
done
EXISTING=()
for f in "${TARGETS[@]}"; do
  if [ -e "$OUT/$f" ]; then EXISTING+=("$OUT/$f"); fi
done
if [ "${#EXISTING[@]}" -gt 0 ] && [ "$FORCE" = 0 ]; then
  {
    echo "make-certs: refusing to overwrite existing keys or certificates:"
    printf '  %s\n' "${EXISTING[@]}"
    echo "Nodes and clients registered with the old ones would stop working. Give --force to replace"
    echo "them, or choose another folder; --keys-only --sites NAME makes only one site's key pair."
  } >&2
  exit 1
fi

if [ "$KEYS_ONLY" = 1 ] && [ ! -f "$OUT/ca.pem" ]; then
  echo "make-certs: note: $OUT/ca.pem does not exist; --keys-only makes node keys only" >&2
fi

for f in "${TARGETS[@]}"; do
  [ ! -d "$OUT/$f" ] || die "$OUT/$f is a folder; remove it (Docker makes one when a mounted file is missing)"
done
mkdir -p "$OUT/keys"
chmod 700 "$OUT/keys"
# Everything is made in a private scratch folder first, then installed into OUT.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/keys"

# Private keys are created under umask 077.
new_ec_key() {
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$1" 2>/dev/null)
}

# Copies a made file to OUT with its mode; an existing file is rewritten in place (same inode), so a
# container that bind-mounts it sees the new contents. The mode is set before the contents arrive.
install_file() { # NAME MODE
  if [ -e "$OUT/$1" ]; then
    chmod "$2" "$OUT/$1"
    cat "$WORK/$1" >"$OUT/$1"
  else
    (umask 077 && cp "$WORK/$1" "$OUT/$1")
    chmod "$2" "$OUT/$1"
  fi
}

san_of() {
  local entries=() name
  for name in "$@"; do
    if [[ "$name" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$name" == *:* ]]; then
      entries+=("IP:$name")
    else
      entries+=("DNS:$name")
    fi
  done
  local IFS=,
  echo "${entries[*]}"
}

server_cert() { # CA NAME CN NAMES...
  local ca="$1" name="$2" cn="$3"
  shift 3
  new_ec_key "$WORK/$name.key"
  openssl req -new -key "$WORK/$name.key" -subj "/O=fedward/CN=$cn" -out "$WORK/$name.csr"
  cat >"$WORK/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $(san_of "$@")
EOF
  openssl x509 -req -in "$WORK/$name.csr" -CA "$WORK/$ca.pem" -CAkey "$WORK/$ca.key" \
    -CAcreateserial -CAserial "$WORK/$ca.srl" -days "$DAYS" -sha384 \
    -extfile "$WORK/$name.ext" -out "$WORK/$name.pem" 2>/dev/null
}

new_ca() { # NAME CN
  new_ec_key "$WORK/$1.key"
  openssl req -x509 -new -key "$WORK/$1.key" -sha384 -days "$CA_DAYS" \
    -subj "/O=fedward/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$WORK/$1.pem"
}

if [ "$KEYS_ONLY" = 0 ]; then
  new_ca ca "fedward deployment CA"
  server_cert ca superlink "fedward SuperLink" "${SUPERLINK_NAMES[@]}"
  server_cert ca he "fedward encrypted inference" "${HE_NAMES[@]}"
  # The Control API's own CA: a site holding ca.pem cannot even verify the Control listener.
  new_ca control-ca "fedward control-plane CA"
  server_cert control-ca control "fedward SuperLink Control API" "${CONTROL_NAMES[@]}"
fi
for site in "${SITE_LIST[@]}"; do
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedward-$site" -f "$WORK/keys/$site"
done

# Nothing is written to OUT until everything was made.
if [ "$KEYS_ONLY" = 0 ]; then
  install_file ca.key 600
  install_file ca.pem 644
  echo "made $OUT/ca.pem and $OUT/ca.key (keep ca.key offline: it can issue certificates)"
  install_file superlink.key 600
  install_file superlink.pem 644
  echo "made $OUT/superlink.pem (SAN $(san_of "${SUPERLINK_NAMES[@]}")) and $OUT/superlink.key"
  install_file he.key 600
  install_file he.pem 644
  echo "made $OUT/he.pem (SAN $(san_of "${HE_NAMES[@]}")) and $OUT/he.key"
  install_file control-ca.key 600
  install_file control-ca.pem 644
  install_file control.key 600
  install_file control.pem 644
  echo "made $OUT/control-ca.pem, $OUT/control-ca.key (coordinator side only: never give them to a site)"
  echo "made $OUT/control.pem (SAN $(san_of "${CONTROL_NAMES[@]}")) and $OUT/control.key"
fi
for site in "${SITE_LIST[@]}"; do
  install_file "keys/$site" 600
  install_file "keys/$site.pub" 644
  echo "made $OUT/keys/$site (node key, stays at the site) and $OUT/keys/$site.pub (register it)"
done

echo "next: register each site's public key with the SuperLink:" \
  "flwr supernode register keys/SITE.pub FEDERATION, inside the coordinator (see docs/deployment.md)"
