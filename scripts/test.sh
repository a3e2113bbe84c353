#!/usr/bin/env bash
# Keel's whole test suite: the one command CI (.ci/run) and developers run.
# Needs only a Rust toolchain (rustup); installs rustfmt/clippy if missing,
# and MariaDB for the projector tests if no server answers at $MYSQL_URL
# (scripts/ensure-mysql.sh says what it did), and etcd plus protoc for the
# replication control plane (scripts/ensure-etcd.sh, likewise).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

step "etcd and protoc for the replication control plane: protoc builds etcd-client (\$KEEL_ETCD_ENDPOINT, default http://127.0.0.1:2379)"
scripts/ensure-etcd.sh

step "format check"
cargo fmt --all -- --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors: broken links, missing docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "database for the projector tests (\$MYSQL_URL, default mysql://root@127.0.0.1:3306/test)"
scripts/ensure-mysql.sh

step "tests (debug)"
cargo test --workspace --locked

step "zero-allocation test (release: the steady state the engine ships in)"
cargo test -p keel-core --test alloc --release --locked

step "loom models of the slot hand-off, completion, parking and admission-gate protocols"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p keel-core --lib --release --locked

step "fuzz smoke: every decoder and the ledger's apply on arbitrary bytes (${KEEL_FUZZ_SECONDS:-15} s per target)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
# One line per target when it passes; the whole log (build errors, the
# crashing input and its backtrace) when it does not.
fuzz() {
  local dir=$1 target=$2 log
  log=$(mktemp)
  if (cd "$dir" && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
      -max_total_time="${KEEL_FUZZ_SECONDS:-15}" -print_final_stats=0) >"$log" 2>&1; then
    printf '%s/%s: %s\n' "$dir" "$target" "$(tail -n 1 "$log")"
    rm -f "$log"
  else
    printf '%s/%s FAILED:\n' "$dir" "$target"
    tail -n 60 "$log"
    return 1
  fi
}
fuzz journal/fuzz decode_record
fuzz journal/fuzz decode_segment_header
fuzz ledger/fuzz decode
fuzz ledger/fuzz apply
fuzz protocol/fuzz decode_frame

step "all checks passed"
