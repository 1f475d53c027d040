#!/usr/bin/env bash
# Side-by-side DNS throughput: rumor vs NSD, the same 10,000 names and the
# same query file (90% existing names, 10% missing), dnsperf on core 0 and
# each server pinned alone to core 1. The fair figure on a 2-core machine is
# answers per server CPU-second (dnsperf itself saturates near 155k qps).
#
#   bench/dns_qps.sh [SECONDS_PER_RUN] [tokio|smol|PATH_TO_BINARY]
#
# The second argument picks the adapter (built in release mode) or a
# binary; the default is tokio's `rumor`.
#
# Prints one block per server and the ratio. A benchmark, not a test: it
# exits 0 whatever the figures, non-zero only if something failed to run.
set -euo pipefail
secs=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${2:-}
names=10000
for tool in nsd dnsperf taskset curl; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install -y nsd dnsperf util-linux curl)"; exit 2; }
done
case "$bin" in
  "" | tokio) (cd "$root" && cargo build --release -q -p rumor-tokio); bin="${CARGO_TARGET_DIR:-$root/target}/release/rumor" ;;
  smol) (cd "$root" && cargo build --release -q -p rumor-smol); bin="${CARGO_TARGET_DIR:-$root/target}/release/rumor-smol" ;;
esac
echo "rumor binary: $bin"
work=$(mktemp -d /tmp/rumor-dnsbench.XXXXXX)
pids=()
# Every process below a pid (NSD forks xfrd -> main -> server).
tree() { local p=$1; echo "$p"; for c in $(pgrep -P "$p"); do tree "$c"; done; }
kill_tree() { local all; all=$(tree "$1"); kill $all 2>/dev/null || true; }
cleanup() { for p in "${pids[@]}"; do kill_tree "$p"; done; pkill -f "$work/nsd.conf" 2>/dev/null || true; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Names, zone file, query file.
python3 - "$work" "$names" <<'PY'
import sys, random, json
work, n = sys.argv[1], int(sys.argv[2])
random.seed(42)
ips = [f"10.{(i>>16)&255}.{(i>>8)&255}.{i&255}" for i in range(n)]
with open(f"{work}/records.json", "w") as f:
    json.dump([{"name": f"host{i}.bench.test", "ips": [ips[i]], "ttl": 86400} for i in range(n)], f)
with open(f"{work}/bench.test.zone", "w") as f:
    f.write("$ORIGIN bench.test.\n$TTL 86400\n")
    f.write("@ IN SOA ns1.bench.test. hostmaster.bench.test. 1 3600 600 86400 30\n")
    f.write("@ IN NS ns1.bench.test.\nns1 IN A 127.0.0.1\n")
    for i in range(n):
        f.write(f"host{i} IN A {ips[i]}\n")
with open(f"{work}/queries.txt", "w") as f:
    for _ in range(200000):
        if random.random() < 0.9:
            f.write(f"host{random.randrange(n)}.bench.test A\n")
        else:
            f.write(f"missing{random.randrange(10**6)}.bench.test A\n")
PY

# utime+stime of a process and all its descendants, in clock ticks.
# (The command name may hold spaces, "nsd: server 1": count fields after ')'.)
ticks_of() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12+$13}'; }
cpu_ticks() { local t=0 q; for q in $(tree "$1"); do t=$((t + $(ticks_of "$q" || echo 0))); done; echo $t; }
rss_kib() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

# Runs dnsperf against 127.0.0.1:$1 for server pid $2; prints "qps lost answers cpu_s".
measure() {
  local port=$1 pid=$2 out before after
  # Warm up, then measure.
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l 2 -q 200 >/dev/null 2>&1 || true
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$secs" -q 200 2>&1)
  after=$(cpu_ticks "$pid")
  local qps lost completed
  qps=$(awk '/Queries per second/{print $4}' <<<"$out")
  lost=$(awk '/Queries lost/{print $3}' <<<"$out")
  completed=$(awk '/Queries completed/{print $3}' <<<"$out")
  local noerr nx
  noerr=$(grep -o 'NOERROR [0-9]*' <<<"$out" | awk '{print $2}' | head -1)
  nx=$(grep -o 'NXDOMAIN [0-9]*' <<<"$out" | awk '{print $2}' | head -1)
  local cpu
  cpu=$(awk -v a="$after" -v b="$before" -v hz="$hz" 'BEGIN{printf "%.2f", (a-b)/hz}')
  echo "$qps $lost $completed $cpu ${noerr:-0} ${nx:-0}"
}

report() {
  local label=$1 qps=$2 lost=$3 completed=$4 cpu=$5 noerr=$6 nx=$7 rss=$8
  local per_cpu
  per_cpu=$(awk -v c="$completed" -v s="$cpu" 'BEGIN{ if (s>0) printf "%.0f", c/s; else print "inf"}')
  printf "%-6s qps=%-10s lost=%-6s answered=%-9s (NOERROR %s, NXDOMAIN %s) server_cpu_s=%-6s answers_per_cpu_s=%-9s peak_rss_mib=%s\n" \
    "$label" "$qps" "$lost" "$completed" "$noerr" "$nx" "$cpu" "$per_cpu" "$(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}')"
  echo "$per_cpu" > "$work/$label.percpu"
}

# --- rumor ---
rport=$(free_port); aport=$(free_port); gport=$(free_port)
taskset -c 1 "$bin" node --dns "127.0.0.1:$rport" --api "127.0.0.1:$aport" --gossip "127.0.0.1:$gport" --ephemeral \
  >"$work/rumor.log" 2>&1 &
rpid=$!; pids+=("$rpid")
for _ in $(seq 100); do curl -sf "127.0.0.1:$aport/health" >/dev/null && break; sleep 0.1; done
curl -sf "127.0.0.1:$aport/health" >/dev/null || { echo "rumor did not start:"; cat "$work/rumor.log"; exit 1; }
curl -sf -X POST "127.0.0.1:$aport/add" --data-binary "@$work/records.json" >/dev/null
read -r qps lost completed cpu noerr nx < <(measure "$rport" "$rpid")
report rumor "$qps" "$lost" "$completed" "$cpu" "$noerr" "$nx" "$(rss_kib "$rpid")"
kill_tree "$rpid"

# --- NSD ---
nport=$(free_port); cport=$(free_port)
cat >"$work/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$nport
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$work"
  database: ""
  zonelistfile: "$work/zone.list"
  pidfile: "$work/nsd.pid"
  xfrdfile: "$work/xfrd.state"
  xfrdir: "$work"
  logfile: "$work/nsd.log"
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: bench.test
  zonefile: bench.test.zone
CONF
taskset -c 1 nsd -d -c "$work/nsd.conf" >"$work/nsd.out" 2>&1 &
npid=$!; pids+=("$npid")
for _ in $(seq 100); do dig +time=1 +tries=1 @127.0.0.1 -p "$nport" host1.bench.test +short 2>/dev/null | grep -q . && break; sleep 0.1; done
# The server process is the deepest descendant; its peak RSS is reported.
server_pid=$(tree "$npid" | tail -1)
read -r qps lost completed cpu noerr nx < <(measure "$nport" "$npid")
report nsd "$qps" "$lost" "$completed" "$cpu" "$noerr" "$nx" "$(rss_kib "$server_pid")"
kill_tree "$npid"

awk -v r="$(cat "$work/rumor.percpu")" -v n="$(cat "$work/nsd.percpu")" \
  'BEGIN{ printf "ratio  rumor/nsd answers per server CPU-second = %.2f (target >= 1.25)\n", r/n }'
