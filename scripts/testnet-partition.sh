#!/usr/bin/env bash
# Cut a running testnet (scripts/testnet.sh) in two: the validators of SIDE on one side, the
# rest on the other; no packet crosses, in either direction. With SECONDS, heal after that
# long; with --heal, remove every cut now.
#
# Usage: scripts/testnet-partition.sh DIR "1 2" [SECONDS]
#        scripts/testnet-partition.sh DIR --heal
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:?usage: scripts/testnet-partition.sh DIR \"1 2\" [SECONDS] | DIR --heal}"
SIDE="${2:?which validators are on one side, e.g. \"1 2\", or --heal}"
# shellcheck source=testnet-lib.sh
source "$ROOT/scripts/testnet-lib.sh"
testnet_load "$DIR"
N=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["nodes"]))' "$DIR/cluster.json")
if [ "$SIDE" = "--heal" ]; then
  testnet_heal "$N"
  echo "healed"
  exit 0
fi
for s in $SIDE; do
  [ "$s" -ge 1 ] && [ "$s" -le "$N" ] || { echo "no validator $s in a testnet of $N" >&2; exit 2; }
done
testnet_partition "$SIDE" "$N"
echo "partitioned: {$SIDE} | the other $((N - $(wc -w <<<"$SIDE")))"
if [ -n "${3:-}" ]; then
  sleep "$3"
  testnet_heal "$N"
  echo "healed after $3 s"
fi
