#!/usr/bin/env bash
# Stop the nodes of a cluster started by scripts/local-cluster.sh.
# Usage: scripts/stop-cluster.sh DIR
set -euo pipefail
DIR="${1:?usage: scripts/stop-cluster.sh DIR}"
[ -f "$DIR/cluster.json" ] || { echo "no cluster.json in $DIR" >&2; exit 1; }
PIDS=$(python3 -c 'import json,sys; print(" ".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$DIR/cluster.json")
for pid in $PIDS; do kill -TERM "$pid" 2>/dev/null || true; done
for _ in $(seq 1 100); do
  alive=0
  for pid in $PIDS; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" -eq 0 ] && { echo "stopped"; exit 0; }
  sleep 0.1
done
for pid in $PIDS; do kill -KILL "$pid" 2>/dev/null || true; done
echo "stopped (some nodes needed SIGKILL)"
