#!/usr/bin/env bash
# Keel's whole test suite: the one command CI (.ci/run) and developers run.
# Needs only a Rust toolchain (rustup); installs rustfmt/clippy if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

step "format check"
cargo fmt --all -- --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (debug)"
cargo test --workspace --locked

step "zero-allocation test (release: the steady state the engine ships in)"
cargo test -p keel-core --test alloc --release --locked

step "loom models of the slot hand-off, completion, parking and admission-gate protocols"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p keel-core --lib --release --locked

step "all checks passed"
