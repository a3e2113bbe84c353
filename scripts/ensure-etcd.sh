#!/usr/bin/env bash
# Makes sure what the replication control plane needs is here, saying what
# it did:
#   - protoc (the etcd-client crate generates its gRPC code at build time):
#     installs Debian's protobuf-compiler if missing (apt-get, as root);
#   - nft, as root (the cluster partition tests): Debian's nftables;
#   - an etcd answering at $KEEL_ETCD_ENDPOINT (default http://127.0.0.1:2379):
#     uses one that answers, else starts the installed etcd, else installs
#     Debian's etcd-server and starts it.
# A started etcd is one member on loopback, its data in $KEEL_ETCD_DATADIR
# (default ${TMPDIR:-/tmp}/keel-etcd), its log next to it; it keeps running
# after the script (tests share it; each uses its own key prefix).
set -euo pipefail

endpoint="${KEEL_ETCD_ENDPOINT:-http://127.0.0.1:2379}"
datadir="${KEEL_ETCD_DATADIR:-${TMPDIR:-/tmp}/keel-etcd}"
hostport="${endpoint#*://}"
host="${hostport%%:*}"
port="${hostport##*:}"

say() { printf 'ensure-etcd: %s\n' "$*"; }

install_debian() {
  local package="$1"
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install $package (needs root and apt-get): install it, then run again"
    exit 1
  fi
  say "installing Debian's $package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null
  }
}

if ! command -v protoc >/dev/null 2>&1; then
  install_debian protobuf-compiler
fi
say "protoc: $(protoc --version)"

# The partition tests isolate a node process with an nft drop rule (as root).
if [[ $(id -u) -eq 0 ]] && ! command -v nft >/dev/null 2>&1; then
  install_debian nftables
fi
if command -v nft >/dev/null 2>&1; then
  say "nft: $(nft --version)"
else
  say "no nft and not root: the cluster partition tests will skip"
fi

answers() {
  curl -fsS --max-time 2 "$endpoint/health" 2>/dev/null | grep -q '"health":"true"'
}

if answers; then
  say "etcd answers at $endpoint"
  exit 0
fi

case "$host" in
  127.0.0.1|localhost) ;;
  *) say "no etcd answers at $endpoint, and only a local one is ever started"; exit 1 ;;
esac

if ! command -v etcd >/dev/null 2>&1; then
  install_debian etcd-server
  # Debian's package may start its own service; use it if it answers here.
  sleep 1
  if answers; then
    say "etcd answers at $endpoint (the package's service)"
    exit 0
  fi
fi

mkdir -p "$datadir"
peer_port=$((port + 1))
say "starting etcd $(etcd --version 2>/dev/null | head -n 1 | awk '{print $3}') at $endpoint (data: $datadir)"
nohup etcd --name keel-test --data-dir "$datadir/data" \
  --listen-client-urls "http://$host:$port" --advertise-client-urls "http://$host:$port" \
  --listen-peer-urls "http://$host:$peer_port" --initial-advertise-peer-urls "http://$host:$peer_port" \
  --initial-cluster "keel-test=http://$host:$peer_port" \
  >"$datadir/etcd.log" 2>&1 &
for _ in $(seq 1 60); do
  if answers; then
    say "etcd answers at $endpoint"
    exit 0
  fi
  sleep 0.5
done
say "etcd did not answer within 30 s; its log: $datadir/etcd.log"
tail -n 20 "$datadir/etcd.log" >&2 || true
exit 1
