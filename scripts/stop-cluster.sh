#!/usr/bin/env bash
# Stop the nodes of a cluster started by scripts/local-cluster.sh or scripts/testnet.sh; for a
# testnet also remove its network namespaces, links, bridge and shaping (also after a start
# that failed half-way).
# Usage: scripts/stop-cluster.sh DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:?usage: scripts/stop-cluster.sh DIR}"
if [ ! -f "$DIR/cluster.json" ] && [ ! -f "$DIR/testnet.env" ]; then
  echo "no cluster.json or testnet.env in $DIR" >&2; exit 1
fi
msg="stopped"
if [ -f "$DIR/cluster.json" ]; then
  PIDS=$(python3 -c 'import json,sys; print(" ".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$DIR/cluster.json")
  for pid in $PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
  stopped=0
  for _ in $(seq 1 100); do
    alive=0
    for pid in $PIDS; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && { stopped=1; break; }
    sleep 0.1
  done
  if [ "$stopped" -eq 0 ]; then
    for pid in $PIDS; do kill -KILL "$pid" 2>/dev/null || true; done
    msg="stopped (some nodes needed SIGKILL)"
  fi
fi
if [ -f "$DIR/testnet.env" ]; then
  # shellcheck source=testnet-lib.sh
  source "$ROOT/scripts/testnet-lib.sh"
  testnet_load "$DIR"
  testnet_teardown
  msg="$msg; namespaces, links and bridge of testnet $TN_TAG removed"
fi
echo "$msg"
