#!/usr/bin/env bash
# Build the envelope fuzz target with libFuzzer's coverage instrumentation on the stable
# toolchain and run it for a bounded time: scripts/fuzz.sh [SECONDS] (default 60).
# (With cargo-fuzz installed, `cargo fuzz run envelope` in fuzz/ runs the same target.)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS="${1:-60}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
# With an explicit --target, RUSTFLAGS reach the fuzzed crates but not build scripts and proc
# macros (which must not be instrumented).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --target "$HOST" --bin envelope
mkdir -p corpus/envelope
# Seeds: a few well-formed envelopes produced by the protocol crate's tests are not needed;
# libFuzzer's comparison tracing finds the version byte and the variant tags quickly.
"./target/$HOST/release/envelope" -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 corpus/envelope
