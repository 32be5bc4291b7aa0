#!/usr/bin/env bash
# Add a validator to a running local cluster (started by scripts/local-cluster.sh --detach):
# the join and set-change flow end to end.
#
# Usage: scripts/add-validator.sh DIR [--threshold T]
#   1. initialises the new validator's data directory (DIR/node<N+1>),
#   2. writes the next session's network definition with the new validator added,
#   3. restarts every running node with it (a set change is picked up at start) and starts the
#      new node, bootstrapping from node 1 only,
#   4. waits until every node reports the new session's vaults active, and prints them (the
#      previous session's vaults stay listed as retiring).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:?usage: scripts/add-validator.sh DIR [--threshold T]}"
shift
THRESHOLD=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threshold) THRESHOLD="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
DIR="$(cd "$DIR" && pwd)"
[ -f "$DIR/cluster.json" ] || { echo "no cluster.json in $DIR (start it with scripts/local-cluster.sh --detach)" >&2; exit 1; }
BIN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("bin",""))' "$DIR/cluster.json")"
[ -x "$BIN" ] || BIN="$ROOT/target/debug/vaultd"
[ -x "$BIN" ] || { echo "no vaultd binary; run scripts/local-cluster.sh first" >&2; exit 1; }

N=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["nodes"]))' "$DIR/cluster.json")
NEW=$((N + 1))
BASE_PORT=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["nodes"][0]["api"].rsplit(":",1)[1]) - 101)' "$DIR/cluster.json")

echo "==> initialising validator $NEW in $DIR/node$NEW"
mkdir -p "$DIR/node$NEW"
"$BIN" init --insecure-no-passphrase --data-dir "$DIR/node$NEW" > "$DIR/node$NEW/keys.json" 2>>"$DIR/node$NEW/node.log"
NEW_ID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["peer_id"])' "$DIR/node$NEW/keys.json")"
echo "    its PeerId: $NEW_ID"

echo "==> writing the next session's network definition"
SESSION=$(python3 - "$DIR/network.toml" "$NEW_ID" "$((BASE_PORT + NEW))" "$THRESHOLD" <<'PY'
import sys, tomllib
path, new_id, port, threshold = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
d = tomllib.load(open(path, "rb"))
session = d.get("session", 0) + 1
lines = ["# Local vaultd network written by scripts/add-validator.sh",
         f'name = "{d["name"]}"', f"session = {session}",
         "coins = [%s]" % ", ".join(f'"{c}"' for c in d["coins"])]
if threshold:
    lines.append(f"threshold = {threshold}")
lines.append("bootstrap = [%s]" % ", ".join(f'"{b}"' for b in d.get("bootstrap", [])))
validators = d["validators"] + [{"peer_id": new_id, "addrs": [f"/ip4/127.0.0.1/tcp/{port}"]}]
for v in validators:
    lines += ["", "[[validators]]", f'peer_id = "{v["peer_id"]}"']
    if v.get("addrs"):
        lines.append("addrs = [%s]" % ", ".join(f'"{a}"' for a in v["addrs"]))
open(path + ".next", "w").write("\n".join(lines) + "\n")
print(session)
PY
)
mv "$DIR/network.toml" "$DIR/network-session$((SESSION - 1)).toml"
mv "$DIR/network.toml.next" "$DIR/network.toml"
echo "    session $SESSION, $NEW validators"

echo "==> restarting the running nodes with it"
bash "$ROOT/scripts/stop-cluster.sh" "$DIR"
PIDS=()
for i in $(seq 1 "$NEW"); do
  "$BIN" run --insecure-no-passphrase --data-dir "$DIR/node$i" --network "$DIR/network.toml" \
    --listen "/ip4/127.0.0.1/tcp/$((BASE_PORT + i))" --api "127.0.0.1:$((BASE_PORT + 100 + i))" \
    >>"$DIR/node$i/node.log" 2>&1 &
  PIDS+=("$!")
done

python3 - "$DIR" "$NEW" "$BASE_PORT" "$BIN" -- "${PIDS[@]}" <<'PY'
import json, sys
args = sys.argv[1:]
d, n, base, binary = args[0], int(args[1]), int(args[2]), args[3]
pids = args[args.index("--") + 1:]
nodes = []
for i in range(1, n + 1):
    pid = json.load(open(f"{d}/node{i}/keys.json"))["peer_id"]
    nodes.append({"name": f"node{i}", "peer_id": pid, "api": f"127.0.0.1:{base + 100 + i}",
                  "p2p": f"/ip4/127.0.0.1/tcp/{base + i}/p2p/{pid}", "data_dir": f"{d}/node{i}",
                  "pid": int(pids[i - 1]), "log": f"{d}/node{i}/node.log"})
json.dump({"network": f"{d}/network.toml", "bin": binary, "nodes": nodes},
          open(f"{d}/cluster.json", "w"), indent=2)
PY

echo "==> waiting until every node reports session $SESSION's vaults active"
NCOINS=$(python3 -c 'import sys, tomllib; print(len(tomllib.load(open(sys.argv[1], "rb"))["coins"]))' "$DIR/network.toml")
START=$(date +%s)
while true; do
  ready=0
  for i in $(seq 1 "$NEW"); do
    if ! kill -0 "${PIDS[$((i-1))]}" 2>/dev/null; then
      echo "node$i exited; last lines of its log:" >&2
      tail -n 30 "$DIR/node$i/node.log" >&2
      exit 1
    fi
    if curl -sf "http://127.0.0.1:$((BASE_PORT + 100 + i))/status" 2>/dev/null | python3 -c '
import json, sys
v = [x for x in json.load(sys.stdin).get("vaults", []) if x["session"] == int(sys.argv[2])]
sys.exit(0 if len(v) == int(sys.argv[1]) and all(x["status"] == "active" for x in v) else 1)' "$NCOINS" "$SESSION"; then
      ready=$((ready + 1))
    fi
  done
  [ "$ready" -eq "$NEW" ] && break
  if [ $(( $(date +%s) - START )) -gt 300 ]; then
    echo "session $SESSION vaults not active after 300 s; see the logs under $DIR" >&2
    exit 1
  fi
  sleep 0.5
done
echo "session $SESSION active on all $NEW validators after $(( $(date +%s) - START )) s"
echo
"$BIN" status --api "127.0.0.1:$((BASE_PORT + 101))" | sed -n '/^vaults:/,$p'
echo
echo "stop the cluster with: scripts/stop-cluster.sh $DIR"
