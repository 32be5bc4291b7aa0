#!/usr/bin/env bash
# Install what building and running vaultd needs and a fresh Debian/Ubuntu machine may lack:
# libclang (RocksDB's bindings are generated with bindgen), a C++ compiler (RocksDB itself),
# curl and python3 (the scripts). Sourced by local-cluster.sh and test.sh; safe to run twice.
set -euo pipefail

vaultd_install_prereqs() {
  local sudo="" missing=()
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  if command -v dpkg >/dev/null; then
    dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
  else
    ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
  fi
  command -v c++ >/dev/null || missing+=(g++)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
      echo "please install: ${missing[*]}" >&2
      return 1
    fi
    echo "==> installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
  command -v cargo >/dev/null || { echo "cargo (Rust) is required: https://rustup.rs" >&2; return 1; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  vaultd_install_prereqs
fi
