#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what is missing (libclang for RocksDB's
# bindings, a C++ compiler, curl), then checks formatting, runs every test, and runs clippy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=prereqs.sh
source "$ROOT/scripts/prereqs.sh"
vaultd_install_prereqs
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# promtool (Debian's prometheus package) checks the /metrics exposition in the cluster test.
if ! command -v promtool >/dev/null; then
  echo "==> installing promtool (prometheus)"
  SUDO=""; if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi
export VAULTD_REQUIRE_PROMTOOL=1

# The namespaced testnet tests (node/tests/testnet.rs, testnet_faults.rs) need root, network
# namespaces and iptables. Where they work they must run (a failure to set them up later fails
# them); where they do not, they are skipped, and said so here.
probe="vaultd-probe-$$"
if [ "$(id -u)" -eq 0 ] && ip netns add "$probe" 2>/dev/null; then
  ip netns del "$probe"
  source "$ROOT/scripts/testnet-lib.sh"
  testnet_install_prereqs
  export VAULTD_REQUIRE_NETNS=1
  echo "==> network namespaces work: the namespaced testnet tests run"
else
  echo "==> SKIPPING the namespaced testnet tests: cannot create network namespaces here (needs root and CAP_SYS_ADMIN)"
fi

echo "==> protocol/ must stay sans-IO (no tokio, libp2p or rocksdb)"
if cargo tree -p vaultd-protocol -e normal --prefix none | grep -E '^(tokio|libp2p|rocksdb|librocksdb-sys) ' ; then
  echo "protocol/ depends on an I/O crate" >&2; exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo build (every binary: the testnet test runs vaultd-linkdelay, another package's)"
# The same profile and features as the tests: this build is theirs, plus the binaries that
# `cargo test` does not link for other packages' tests.
cargo build --workspace --all-targets

echo "==> cargo test (dev profile, dependencies optimised)"
cargo test --workspace --all-targets

echo "==> cargo clippy"
# Check mode shares the test build's librocksdb-sys build-script run (same profile, no debug info
# for dependencies), so clippy compiles no C++. Do not point it at that build's output with
# ROCKSDB_LIB_DIR: the changed environment re-runs the build script, and the next build without
# it compiles RocksDB again (9 minutes of a CI run).
cargo clippy --workspace --all-targets -- -D warnings

echo "==> fuzz the envelope decoder (libFuzzer, bounded time)"
bash "$ROOT/scripts/fuzz.sh" "${VAULTD_FUZZ_SECONDS:-60}"

echo "==> the benchmark command, quick (that it runs; the figures are in docs/BENCHMARKS.md)"
bash "$ROOT/scripts/bench.sh" --dev --quick --out "$ROOT/target/bench-quick/BENCHMARKS.md" \
  --work "$ROOT/target/bench-quick/nodes"
