#!/usr/bin/env bash
# A multi-host vaultd testnet on one machine: N validators, each in its own Linux network
# namespace with its own address on a bridge this script creates, with delay, jitter, loss and
# rate shaping on each validator's link. Only the bootstrap validator's address is in the
# network definition; the others find each other through it. Waits until every vault is active
# and prints them, as scripts/local-cluster.sh does.
#
# Usage: scripts/testnet.sh N [--delay MS] [--jitter MS] [--loss PCT] [--rate MBIT] [--dir DIR]
#                             [--detach] [--coins "BTC ETH SOL"] [--release] [--bin-dir DIR]
#                             [--outbound-only "I J"] [--link "I:DELAY:LOSS ..."]
#                             [--dkg-timeout S] [--timeout S]
#   --delay MS      one-way delay of every validator's link (its outgoing packets), so two
#                   validators are MS apart one way and 2*MS round trip (default 0)
#   --jitter MS     each packet's delay is drawn from delay +- jitter (default 10 % of delay)
#   --loss PCT      random loss of each validator's outgoing packets, percent (default 0)
#   --rate MBIT     each validator's outgoing rate (TBF), Mbit/s (default: unlimited)
#   --dir DIR       where the nodes live (default: a fresh ./testnet-<timestamp>)
#   --detach        return once the vaults are active and leave the testnet running
#                   (scripts/stop-cluster.sh DIR stops it and removes namespaces and shaping)
#   --outbound-only validators (1-based) that accept no inbound connection (their namespace
#                   drops incoming TCP connection attempts): they take part through what they dial
#   --link          validators (1-based) with links of their own: I:DELAY_MS:LOSS_PCT each
#                   (jitter 10 % of it), e.g. "3:200:5" for a far, lossy validator 3
#   --bin-dir DIR   use vaultd and vaultd-linkdelay from DIR, build nothing
# Traffic between a validator and this host (the HTTP API) is not shaped: the host stands for
# the operator next to their node. Needs root, iproute2 and iptables (installed if missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=""
DELAY=0
JITTER=""
LOSS=0
RATE=""
DIR=""
DETACH=0
PROFILE=debug
BIN_DIR=""
COINS="BTC ETH SOL"
OUTBOUND_ONLY=""
LINKS_ARG=""
DKG_TIMEOUT=""
TIMEOUT=600
P2P_PORT=30555
API_PORT=8555
while [ $# -gt 0 ]; do
  case "$1" in
    --delay) DELAY="$2"; shift 2 ;;
    --jitter) JITTER="$2"; shift 2 ;;
    --loss) LOSS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --detach) DETACH=1; shift ;;
    --release) PROFILE=release; shift ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --coins) COINS="$2"; shift 2 ;;
    --outbound-only) OUTBOUND_ONLY="$2"; shift 2 ;;
    --link) LINKS_ARG="$LINKS_ARG $2"; shift 2 ;;
    --dkg-timeout) DKG_TIMEOUT="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    [0-9]*) N="$1"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$N" ] && [ "$N" -ge 2 ] && [ "$N" -le 250 ] || { echo "N must be 2 to 250" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "testnet.sh needs root (network namespaces)" >&2; exit 1; }
num() { python3 -c 'import sys; v=float(sys.argv[1]); sys.exit(0 if v >= 0 else 1)' "$1" 2>/dev/null; }
for v in "$DELAY" "$LOSS" ${JITTER:+"$JITTER"} ${RATE:+"$RATE"}; do
  num "$v" || { echo "not a number: $v" >&2; exit 2; }
done
[ -n "$JITTER" ] || JITTER=$(python3 -c 'import sys; print(float(sys.argv[1]) / 10)' "$DELAY")
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 100 else 1)' "$LOSS" || { echo "--loss must be below 100" >&2; exit 2; }

# shellcheck source=prereqs.sh
source "$ROOT/scripts/prereqs.sh"
vaultd_install_prereqs
# shellcheck source=testnet-lib.sh
source "$ROOT/scripts/testnet-lib.sh"
# shellcheck source=cluster-lib.sh
source "$ROOT/scripts/cluster-lib.sh"
testnet_install_prereqs

DIR="${DIR:-$PWD/testnet-$(date +%Y%m%d-%H%M%S)}"
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
  echo "$DIR exists and is not empty; choose a fresh --dir" >&2; exit 1
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

if [ -z "$BIN_DIR" ]; then
  echo "==> building vaultd and vaultd-linkdelay ($PROFILE)"
  if [ "$PROFILE" = release ]; then
    (cd "$ROOT" && cargo build --release -p vaultd -p vaultd-linkdelay)
  else
    # The targets and features of scripts/test.sh: one shared build.
    (cd "$ROOT" && cargo build --workspace --all-targets)
  fi
  BIN_DIR="$ROOT/target/$PROFILE"
fi
BIN="$BIN_DIR/vaultd"
DELAYER="$BIN_DIR/vaultd-linkdelay"
for b in "$BIN" "$DELAYER"; do
  [ -x "$b" ] || { echo "no $b (build the workspace first)" >&2; exit 1; }
done

# Names: a tag of this testnet in every namespace, link and bridge name (Linux allows 15
# characters), so two testnets and the host's own interfaces never collide.
testnet_pick "$DIR"
echo "==> testnet $TN_TAG: $N validators on $TN_BRIDGE ($TN_PREFIX.0.0/16), delay ${DELAY} ms +- ${JITTER} ms, loss ${LOSS} %, rate ${RATE:-unlimited} Mbit/s"

# From here on, a failed start removes everything it made.
cleanup_on_failure() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "==> start failed (exit $rc): removing the testnet" >&2
    "$ROOT/scripts/stop-cluster.sh" "$DIR" >&2 || true
  fi
}
trap cleanup_on_failure EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Validators with links of their own: their delay (as senders, at every receiver) and loss.
declare -A LINK_LOSS=()
LINKS=""
for l in $LINKS_ARG; do
  IFS=: read -r li ld ll <<<"$l"
  { [[ "$li" =~ ^[0-9]+$ ]] && [ "$li" -ge 1 ] && [ "$li" -le "$N" ] && num "$ld" && num "${ll:-0}"; } ||
    { echo "--link $l: expected I:DELAY_MS:LOSS_PCT with 1 <= I <= $N" >&2; exit 2; }
  LINK_LOSS[$li]="${ll:-0}"
  LINKS="$LINKS $(testnet_ip "$li")=$ld:$(python3 -c 'import sys; print(float(sys.argv[1]) / 10)' "$ld")"
done

testnet_neighbour_room "$N"
testnet_create_bridge
for i in $(seq 1 "$N"); do
  testnet_add_validator "$i" "$DELAY" "$JITTER" "${LINK_LOSS[$i]:-$LOSS}" "$RATE" "$LINKS"
done
for i in $OUTBOUND_ONLY; do
  testnet_outbound_only "$i"
done

echo "==> initialising $N validators in $DIR"
cluster_init_validators "$BIN" "$DIR" "$N"

{
  echo "# vaultd testnet written by scripts/testnet.sh: only the bootstrap validator's address"
  echo "name = \"testnet\""
  echo "session = 0"
  printf 'coins = [%s]\n' "$(for c in $COINS; do printf '"%s", ' "$c"; done | sed 's/, $//')"
  echo "bootstrap = [\"/ip4/$(testnet_ip 1)/tcp/$P2P_PORT/p2p/${IDS[0]}\"]"
  for i in $(seq 1 "$N"); do
    echo
    echo "[[validators]]"
    echo "peer_id = \"${IDS[$((i-1))]}\""
  done
} > "$DIR/network.toml"

echo "==> starting $N nodes (node 1 is the bootstrap)"
# When the first node was spawned (Unix ms, in cluster.json): where a DKG's wall time starts.
STARTED_MS="$(date +%s%3N)"
PIDS=()
for i in $(seq 1 "$N"); do
  ip="$(testnet_ip "$i")"
  extra=()
  [ -n "$DKG_TIMEOUT" ] && extra+=(--dkg-timeout "$DKG_TIMEOUT")
  # As an operator on a host of its own: listen on every interface, tell peers the public
  # address, serve the API to the operator's host.
  ip netns exec "$(testnet_ns "$i")" "$BIN" run --insecure-no-passphrase \
    --data-dir "$DIR/node$i" --network "$DIR/network.toml" \
    --listen "/ip4/0.0.0.0/tcp/$P2P_PORT" --external-address "/ip4/$ip/tcp/$P2P_PORT" \
    --api "$ip:$API_PORT" --api-allow-remote "${extra[@]}" \
    >>"$DIR/node$i/node.log" 2>&1 &
  PIDS+=("$!")
done

python3 - "$DIR" "$N" "$BIN" "$TN_PREFIX" "$P2P_PORT" "$API_PORT" "$DELAY" "$JITTER" "$LOSS" "${RATE:-0}" "$STARTED_MS" "${IDS[@]}" -- "${PIDS[@]}" <<'PY'
import json, sys
a = sys.argv[1:]
d, n, binary, prefix, p2p, api = a[0], int(a[1]), a[2], a[3], int(a[4]), int(a[5])
delay, jitter, loss, rate = (float(x) for x in a[6:10])
started_ms = int(a[10])
sep = a.index("--")
ids, pids = a[11:sep], a[sep + 1:]
env = dict(l.strip().split("=", 1) for l in open(f"{d}/testnet.env") if "=" in l)
nodes = []
for i in range(1, n + 1):
    ip = f"{prefix}.{i // 200}.{i % 200 + 10}"
    nodes.append({
        "name": f"node{i}",
        "peer_id": ids[i - 1],
        "api": f"{ip}:{api}",
        "p2p": f"/ip4/{ip}/tcp/{p2p}/p2p/{ids[i - 1]}",
        "data_dir": f"{d}/node{i}",
        "pid": int(pids[i - 1]),
        "log": f"{d}/node{i}/node.log",
        "netns": f"{env['TN_NS_PREFIX']}{i}",
    })
json.dump({"network": f"{d}/network.toml", "bin": binary, "nodes": nodes,
           "started_at_ms": started_ms,
           "testnet": {"bridge": env["TN_BRIDGE"], "host": f"{prefix}.0.1",
                       "delay_ms": delay, "jitter_ms": jitter, "loss_pct": loss,
                       "rate_mbit": rate or None}},
          open(f"{d}/cluster.json", "w"), indent=2)
PY

echo "==> waiting until every node reports every vault active"
APIS=()
for i in $(seq 1 "$N"); do APIS+=("$(testnet_ip "$i"):$API_PORT"); done
cluster_wait_active "$DIR" "$(echo $COINS | wc -w)" "$TIMEOUT" "${PIDS[@]}" -- "${APIS[@]}"
trap - EXIT INT TERM
echo
cluster_print_vaults "$(testnet_ip 1):$API_PORT" "$DIR/status-node1.json"
echo
printf '%-6s %-14s %-54s %s\n' node netns peer_id api
for i in $(seq 1 "$N"); do
  printf '%-6s %-14s %-54s http://%s:%s/status\n' "node$i" "$(testnet_ns "$i")" "${IDS[$((i-1))]}" "$(testnet_ip "$i")" "$API_PORT"
done
echo
echo "peers and round trips as node 1 sees them:  $BIN peers --api $(testnet_ip 1):$API_PORT"
echo "sign (approved on t validators):            $BIN sign --cluster $DIR/cluster.json --coin BTC --message $(printf '00%.0s' $(seq 32))"
echo "a shell on validator 2's host:              ip netns exec $(testnet_ns 2) bash"
echo "cut the testnet in two for a while:         scripts/testnet-partition.sh $DIR \"1 2\" 30"
echo "cluster description: $DIR/cluster.json"

if [ "$DETACH" -eq 1 ]; then
  echo "testnet left running; stop it with: scripts/stop-cluster.sh $DIR"
  exit 0
fi
trap '"$ROOT/scripts/stop-cluster.sh" "$DIR"; exit 0' INT TERM
echo "press Ctrl-C to stop the testnet (and remove its namespaces)"
wait
