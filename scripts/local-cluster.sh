#!/usr/bin/env bash
# Start a local N-node vaultd cluster, wait until every vault is active, print the vaults.
#
# Usage: scripts/local-cluster.sh [N] [--dir DIR] [--detach] [--release] [--base-port PORT]
#                                 [--coins "BTC ETH SOL"] [--threshold T]
#   N            number of validators (default 4)
#   --dir DIR    where the nodes live (default: a fresh ./cluster-<timestamp>)
#   --detach     return once the vaults are active and leave the nodes running
#                (stop them with scripts/stop-cluster.sh DIR)
#   --release    build and run the release binary (default: the dev profile the tests use)
#   --base-port  node i listens on PORT+i (libp2p) and PORT+100+i (HTTP); default 40100
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=4
DIR=""
DETACH=0
PROFILE=debug
BASE_PORT=40100
COINS="BTC ETH SOL"
THRESHOLD=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --detach) DETACH=1; shift ;;
    --release) PROFILE=release; shift ;;
    --base-port) BASE_PORT="$2"; shift 2 ;;
    --coins) COINS="$2"; shift 2 ;;
    --threshold) THRESHOLD="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    [0-9]*) N="$1"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ "$N" -ge 2 ] || { echo "N must be at least 2" >&2; exit 2; }
# shellcheck source=prereqs.sh
source "$ROOT/scripts/prereqs.sh"
vaultd_install_prereqs
# shellcheck source=cluster-lib.sh
source "$ROOT/scripts/cluster-lib.sh"
DIR="${DIR:-$PWD/cluster-$(date +%Y%m%d-%H%M%S)}"
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
  echo "$DIR exists and is not empty; choose a fresh --dir" >&2; exit 1
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

echo "==> building vaultd ($PROFILE)"
if [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build --release -p vaultd)
else
  # Same targets and features as `cargo test --workspace --all-targets` (scripts/test.sh), so
  # the two share one build; `-p vaultd` alone would resolve other features and rebuild RocksDB.
  (cd "$ROOT" && cargo build --workspace --all-targets)
fi
BIN="$ROOT/target/$PROFILE/vaultd"

echo "==> initialising $N validators in $DIR"
cluster_init_validators "$BIN" "$DIR" "$N"

p2p_port() { echo $((BASE_PORT + $1)); }
api_port() { echo $((BASE_PORT + 100 + $1)); }

{
  echo "# Local vaultd network written by scripts/local-cluster.sh"
  echo "name = \"local\""
  echo "session = 0"
  printf 'coins = [%s]\n' "$(for c in $COINS; do printf '"%s", ' "$c"; done | sed 's/, $//')"
  [ -n "$THRESHOLD" ] && echo "threshold = $THRESHOLD"
  echo "bootstrap = [\"/ip4/127.0.0.1/tcp/$(p2p_port 1)/p2p/${IDS[0]}\"]"
  for i in $(seq 1 "$N"); do
    echo
    echo "[[validators]]"
    echo "peer_id = \"${IDS[$((i-1))]}\""
    echo "addrs = [\"/ip4/127.0.0.1/tcp/$(p2p_port "$i")\"]"
  done
} > "$DIR/network.toml"

echo "==> starting $N nodes (node 1 is the bootstrap)"
PIDS=()
for i in $(seq 1 "$N"); do
  "$BIN" run --insecure-no-passphrase --data-dir "$DIR/node$i" --network "$DIR/network.toml" \
    --listen "/ip4/127.0.0.1/tcp/$(p2p_port "$i")" --api "127.0.0.1:$(api_port "$i")" \
    >>"$DIR/node$i/node.log" 2>&1 &
  PIDS+=("$!")
done

stop_nodes() {
  echo
  echo "==> stopping the nodes"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped"
}

python3 - "$DIR" "$N" "$BASE_PORT" "$BIN" "${IDS[@]}" -- "${PIDS[@]}" <<'PY'
import json, sys
args = sys.argv[1:]
d, n, base, binary = args[0], int(args[1]), int(args[2]), args[3]
sep = args.index("--")
ids, pids = args[4:sep], args[sep + 1:]
nodes = []
for i in range(1, n + 1):
    nodes.append({
        "name": f"node{i}",
        "peer_id": ids[i - 1],
        "api": f"127.0.0.1:{base + 100 + i}",
        "p2p": f"/ip4/127.0.0.1/tcp/{base + i}/p2p/{ids[i - 1]}",
        "data_dir": f"{d}/node{i}",
        "pid": int(pids[i - 1]),
        "log": f"{d}/node{i}/node.log",
    })
json.dump({"network": f"{d}/network.toml", "bin": binary, "nodes": nodes}, open(f"{d}/cluster.json", "w"), indent=2)
PY

echo "==> waiting until every node reports every vault active"
APIS=()
for i in $(seq 1 "$N"); do APIS+=("127.0.0.1:$(api_port "$i")"); done
if ! cluster_wait_active "$DIR" "$(echo $COINS | wc -w)" 300 "${PIDS[@]}" -- "${APIS[@]}"; then
  stop_nodes
  exit 1
fi
echo
cluster_print_vaults "127.0.0.1:$(api_port 1)" "$DIR/status-node1.json"
echo
printf '%-6s %-54s %s\n' node peer_id api
for i in $(seq 1 "$N"); do
  printf '%-6s %-54s http://127.0.0.1:%s/status\n' "node$i" "${IDS[$((i-1))]}" "$(api_port "$i")"
done
echo
T=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vaults"][0]["threshold"])' "$DIR/status-node1.json")
echo "sign with a vault: a request is signed once t = $T operators approved it on their own nodes;"
echo "this approves on the first t nodes of the cluster with their operators' tokens:"
echo "  $BIN sign --cluster $DIR/cluster.json --coin BTC --message aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
echo "the same with the nodes named one by one (each operator approves the same request):"
printf '  %s sign --coin SOL --message 48656c6c6f' "$BIN"
for i in $(seq 1 "$T"); do printf ' \\\n      --api 127.0.0.1:%s --data-dir %s' "$(api_port "$i")" "$DIR/node$i"; done
echo
echo "one approval by hand (the request is pending until t nodes approved it):"
echo "  curl -s -XPOST http://127.0.0.1:$(api_port 1)/sign -H \"Authorization: Bearer \$(cat $DIR/node1/api-token)\" -H 'content-type: application/json' -d '{\"coin\": \"ETH\", \"messages\": [\"0000000000000000000000000000000000000000000000000000000000000007\"]}'"
echo "  curl -s http://127.0.0.1:$(api_port 1)/sign/<id>"
echo
echo "cluster description: $DIR/cluster.json"

if [ "$DETACH" -eq 1 ]; then
  echo "nodes left running; stop them with: scripts/stop-cluster.sh $DIR"
  exit 0
fi
trap 'stop_nodes; exit 0' INT TERM
echo "press Ctrl-C to stop the cluster"
wait
