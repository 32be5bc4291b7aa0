#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what is missing (libclang for RocksDB's
# bindings, a C++ compiler, curl), then checks formatting, runs every test, and runs clippy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
missing=()
if command -v dpkg >/dev/null; then
  dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
else
  ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
fi
command -v c++ >/dev/null || missing+=(g++)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }

echo "==> protocol/ must stay sans-IO (no tokio, libp2p or rocksdb)"
if cargo tree -p vaultd-protocol -e normal --prefix none | grep -E '^(tokio|libp2p|rocksdb|librocksdb-sys) ' ; then
  echo "protocol/ depends on an I/O crate" >&2; exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo test (dev profile, dependencies optimised)"
cargo test --workspace --all-targets

echo "==> cargo clippy"
# Check-mode builds (clippy) use another build-script unit of librocksdb-sys than the test build,
# which would compile RocksDB's C++ a second time. Check mode never links, so point that unit at
# the static library the test build produced (ROCKSDB_LIB_DIR/ROCKSDB_STATIC are read by
# librocksdb-sys's build script).
ROCKSDB_OUT="$(cargo test --workspace --all-targets --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "build-script-executed" and "librocksdb-sys" in m.get("package_id", ""):
        print(m["out_dir"])
')"
if [ -n "$ROCKSDB_OUT" ] && [ -f "$ROCKSDB_OUT/librocksdb.a" ]; then
  ROCKSDB_LIB_DIR="$ROCKSDB_OUT" ROCKSDB_STATIC=1 cargo clippy --workspace --all-targets -- -D warnings
else
  cargo clippy --workspace --all-targets -- -D warnings
fi
