#!/usr/bin/env bash
# Network namespaces, the bridge and link shaping of scripts/testnet.sh; sourced by it, by
# scripts/stop-cluster.sh and by scripts/testnet-partition.sh. Everything a testnet creates is
# named with its tag and recorded in DIR/testnet.env, and only that is ever removed.

# iptables (nf_tables backend) if missing; iproute2's ip and tc are assumed (Debian's base).
testnet_install_prereqs() {
  command -v ip >/dev/null && command -v tc >/dev/null || { echo "iproute2 (ip, tc) is required" >&2; return 1; }
  if ! command -v iptables >/dev/null; then
    command -v apt-get >/dev/null || { echo "please install iptables" >&2; return 1; }
    echo "==> installing iptables"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
  fi
}

# Choose this testnet's tag and a 10.K.0.0/16 subnet no interface or route of the host uses;
# write DIR/testnet.env.
testnet_pick() {
  local dir="$1" used k
  TN_DIR="$dir"
  TN_TAG="$(head -c 2 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  used="$(ip -4 -o addr show; ip -4 route show table all)"
  TN_PREFIX=""
  for k in $(seq 200 249); do
    if ! grep -q "10\.$k\." <<<"$used"; then TN_PREFIX="10.$k"; break; fi
  done
  [ -n "$TN_PREFIX" ] || { echo "no free 10.200-249.0.0/16 subnet on this host" >&2; return 1; }
  TN_BRIDGE="vtb$TN_TAG"
  TN_NS_PREFIX="vtn$TN_TAG-"
  mkdir -p "$dir/net"
  cat > "$dir/testnet.env" <<EOF
TN_TAG=$TN_TAG
TN_PREFIX=$TN_PREFIX
TN_BRIDGE=$TN_BRIDGE
TN_NS_PREFIX=$TN_NS_PREFIX
EOF
}

# Read DIR/testnet.env (for the scripts that act on a running testnet).
testnet_load() {
  TN_DIR="$1"
  [ -f "$TN_DIR/testnet.env" ] || { echo "no testnet.env in $TN_DIR" >&2; return 1; }
  while IFS='=' read -r k v; do
    case "$k" in TN_TAG|TN_PREFIX|TN_BRIDGE|TN_NS_PREFIX) printf -v "$k" '%s' "$v" ;; esac
  done < "$TN_DIR/testnet.env"
}

testnet_ns() { echo "$TN_NS_PREFIX$1"; }
testnet_ip() { echo "$TN_PREFIX.$(($1 / 200)).$(($1 % 200 + 10))"; }
testnet_host_ip() { echo "$TN_PREFIX.0.1"; }

# The kernel's ARP table is one for every namespace, and its hard limit (gc_thresh3, 1024 by
# default) counts them all: N validators that all talk to each other hold about N * N entries,
# so at N = 32 the table was full and the host's API requests to some nodes failed with "no
# route to host". Raise the limits to what N validators need (never lower them).
testnet_neighbour_room() {
  local n="$1" k need cur
  for k in 1 2 3; do
    need=$(( n * n * k + 256 * k ))
    cur="$(sysctl -n "net.ipv4.neigh.default.gc_thresh$k")"
    if [ "$cur" -lt "$need" ]; then
      echo "==> net.ipv4.neigh.default.gc_thresh$k: $cur -> $need (room for $n validators' ARP entries)"
      sysctl -qw "net.ipv4.neigh.default.gc_thresh$k=$need"
    fi
  done
}

testnet_create_bridge() {
  ip link add "$TN_BRIDGE" type bridge
  ip addr add "$(testnet_host_ip)/16" dev "$TN_BRIDGE"
  ip link set "$TN_BRIDGE" up
}

# Validator I's namespace, its link to the bridge and the shaping between it and the other
# validators: what it sends loses LOSS percent (iptables' statistic match) and leaves at RATE
# Mbit/s (TBF); what it receives from validator J waits J's link delay: DELAY +- JITTER ms,
# or what LINKS ("IP=DELAY:JITTER ...", validators with links of their own) says for J's
# address (vaultd-linkdelay on NFQUEUE 0). So a packet from J to I waits J's delay once, as if
# held on J's way out; it is held on arrival because a packet held on its way out still
# counts against its TCP socket's small-queue budget and would hold back the next segment.
# Traffic to and from the host is not shaped.
testnet_add_validator() {
  local i="$1" delay="$2" jitter="$3" loss="$4" rate="$5" links="${6:-}"
  local ns ip host vh vn log from_args=() link
  ns="$(testnet_ns "$i")"; ip="$(testnet_ip "$i")"; host="$(testnet_host_ip)"
  vh="vt${TN_TAG}h$i"; vn="vt${TN_TAG}n$i"
  ip netns add "$ns"
  ip link add "$vh" type veth peer name "$vn" netns "$ns"
  ip link set "$vh" master "$TN_BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/16" dev "$vn"
  ip -n "$ns" link set "$vn" up
  # Traffic to the host (the operator next to the node) passes unshaped: the first rules.
  ip netns exec "$ns" iptables -A OUTPUT -d "$host" -m comment --comment vaultd-host -j ACCEPT
  ip netns exec "$ns" iptables -t mangle -A PREROUTING -s "$host" -m comment --comment vaultd-host -j ACCEPT
  if [ -n "$rate" ]; then
    ip netns exec "$ns" tc qdisc add dev "$vn" root tbf rate "${rate}mbit" burst 64kb latency 1s
  fi
  if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "$loss"; then
    ip netns exec "$ns" iptables -A OUTPUT -o "$vn" -d "$TN_PREFIX.0.0/16" \
      -m statistic --mode random --probability "$(python3 -c 'import sys; print(float(sys.argv[1]) / 100)' "$loss")" \
      -m comment --comment vaultd-loss -j DROP
  fi
  for link in $links; do from_args+=(--from "$link"); done
  local uniform=0
  python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "$delay" && uniform=1
  if [ "$uniform" -eq 1 ] || [ -n "$links" ]; then
    log="$TN_DIR/net/linkdelay$i.log"
    ip netns exec "$ns" "$DELAYER" --queue 0 --delay-ms "$delay" --jitter-ms "$jitter" "${from_args[@]}" >"$log" 2>&1 &
    # The rule only once the queue has a reader: a queue without one drops every packet.
    local waited=0
    until grep -q "bound" "$log" 2>/dev/null; do
      sleep 0.05; waited=$((waited + 1))
      if [ "$waited" -gt 200 ]; then echo "vaultd-linkdelay did not start in $ns: $(cat "$log")" >&2; return 1; fi
    done
    if [ "$uniform" -eq 1 ]; then
      ip netns exec "$ns" iptables -t mangle -A PREROUTING -i "$vn" -s "$TN_PREFIX.0.0/16" \
        -m comment --comment vaultd-delay -j NFQUEUE --queue-num 0
    else
      for link in $links; do
        ip netns exec "$ns" iptables -t mangle -A PREROUTING -i "$vn" -s "${link%%=*}" \
          -m comment --comment vaultd-delay -j NFQUEUE --queue-num 0
      done
    fi
  fi
}

# Validator I accepts no inbound connection from other validators (behind a NAT or a firewall).
testnet_outbound_only() {
  ip netns exec "$(testnet_ns "$1")" iptables -A INPUT -p tcp --syn ! -s "$(testnet_host_ip)" \
    -m comment --comment vaultd-outbound-only -j DROP
}

# Cut the validators of SIDE (1-based indexes) off from the others, both directions; N is the
# testnet's size.
testnet_partition() {
  local side="$1" n="$2" i j
  for i in $(seq 1 "$n"); do
    for j in $(seq 1 "$n"); do
      local a=0 b=0
      for s in $side; do [ "$s" = "$i" ] && a=1; [ "$s" = "$j" ] && b=1; done
      if [ "$a" != "$b" ]; then
        ip netns exec "$(testnet_ns "$i")" iptables -I OUTPUT -d "$(testnet_ip "$j")" \
          -m comment --comment vaultd-partition -j DROP
      fi
    done
  done
}

# Remove every partition rule.
testnet_heal() {
  local n="$1" i ns
  for i in $(seq 1 "$n"); do
    ns="$(testnet_ns "$i")"
    ip netns exec "$ns" iptables -S OUTPUT | grep -- '--comment vaultd-partition' | sed 's/^-A /-D /' |
      while read -r rule; do
        # shellcheck disable=SC2086
        ip netns exec "$ns" iptables $rule
      done
  done
}

# Stop every process in this testnet's namespaces (SIGTERM, then SIGKILL after 10 s), remove
# the namespaces (their links go with them) and the bridge.
testnet_teardown() {
  local ns pids alive _
  local spaces
  spaces="$(ip netns list | awk '{print $1}' | grep "^$TN_NS_PREFIX" || true)"
  for ns in $spaces; do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    [ -n "$pids" ] && kill -TERM $pids 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    alive=0
    for ns in $spaces; do [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for ns in $spaces; do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    ip netns del "$ns"
  done
  if ip link show "$TN_BRIDGE" >/dev/null 2>&1; then ip link del "$TN_BRIDGE"; fi
}
