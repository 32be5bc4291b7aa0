#!/usr/bin/env bash
# What scripts/local-cluster.sh and scripts/testnet.sh share: waiting until every node reports
# every vault active, and printing the vaults. Sourced.

# Initialise N validators in DIR/node1..N (no passphrase: a local rehearsal) and set IDS to
# their peer ids, in order.
#   cluster_init_validators BIN DIR N
cluster_init_validators() {
  local bin="$1" dir="$2" n="$3" i
  IDS=()
  for i in $(seq 1 "$n"); do
    mkdir -p "$dir/node$i"
    "$bin" init --insecure-no-passphrase --data-dir "$dir/node$i" > "$dir/node$i/keys.json" 2>>"$dir/node$i/node.log"
    IDS+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["peer_id"])' "$dir/node$i/keys.json")")
  done
}

# Wait until each of the nodes whose APIs (host:port) follow `--` reports NCOINS active vaults;
# PIDS are the nodes' processes (one that exits fails the wait, its log's tail printed from
# DIR/node<i>/node.log). Returns 1 after TIMEOUT seconds or on an exit.
#   cluster_wait_active DIR NCOINS TIMEOUT PID... -- API...
cluster_wait_active() {
  local dir="$1" ncoins="$2" timeout="$3"; shift 3
  local pids=() apis=() start i ready
  while [ "$1" != "--" ]; do pids+=("$1"); shift; done
  shift
  apis=("$@")
  start=$(date +%s)
  while true; do
    ready=0
    for i in "${!pids[@]}"; do
      if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "node$((i + 1)) exited; last lines of its log:" >&2
        tail -n 30 "$dir/node$((i + 1))/node.log" >&2
        return 1
      fi
      if curl -sf --max-time 2 "http://${apis[$i]}/status" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
v = [x for x in s.get("vaults", []) if x["status"] != "retiring"]
sys.exit(0 if len(v) == int(sys.argv[1]) and all(x["status"] == "active" for x in v) else 1)' "$ncoins"; then
        ready=$((ready + 1))
      fi
    done
    [ "$ready" -eq "${#pids[@]}" ] && break
    if [ $(( $(date +%s) - start )) -gt "$timeout" ]; then
      echo "vaults not active after $timeout s; see the logs under $dir" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "all vaults active after $(( $(date +%s) - start )) s"
}

# Save API's /status to FILE and print its vaults (coin, status, t/n, address).
cluster_print_vaults() {
  curl -sf "http://$1/status" > "$2"
  python3 - "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("%-5s %-7s %-6s %s" % ("coin", "status", "t/n", "address"))
for v in s["vaults"]:
    tn = "%d/%d" % (v["threshold"], len(v["participants"]))
    print("%-5s %-7s %-6s %s" % (v["coin"], v["status"], tn, v["address"]))
PY
}
