#!/usr/bin/env bash
# Benchmark vaultd: the in-process limit against a cluster of real nodes on loopback, for
# n = 4, 16, 32, 64 and 128 (one coin and three; 128 with one coin), beside the bare limit; writes docs/BENCHMARKS.md (its generated section),
# docs/BENCHMARKS.svg and docs/BENCHMARKS.json.
#
# Usage: scripts/bench.sh [--dev] [--quick] [vaultd-bench options]
#   --dev     use the dev build the tests share (everything optimised, debug assertions on, no
#             second build of RocksDB); default: a release build
#   --quick   sizes 4 and 7, few requests (about a minute)
#   vaultd-bench options: --sizes 4,16 --out FILE --work DIR --base-port PORT
#             --latency-requests N --throughput-requests N   (see: vaultd-bench --help)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=prereqs.sh
source "$ROOT/scripts/prereqs.sh"
vaultd_install_prereqs

PROFILE=release
ARGS=()
for a in "$@"; do
  case "$a" in
    --dev) PROFILE=dev ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done

if [ "$PROFILE" = release ]; then
  echo "==> building vaultd and vaultd-bench (release)"
  cargo build --release -p vaultd -p vaultd-bench -p vaultd-linkdelay
  DIR=target/release
else
  # The same targets and features as scripts/test.sh: one shared build.
  echo "==> building vaultd and vaultd-bench (dev)"
  cargo build --workspace --all-targets
  DIR=target/debug
fi
exec "$DIR/vaultd-bench" --bin "$DIR/vaultd" --profile "$PROFILE" "${ARGS[@]}"
