#!/usr/bin/env bash
# Soak: a 3-node cluster on loopback under everything at once, for a while.
#
#   - dnsperf at 80% of the rate one node answered in a short probe first,
#     spread over the three nodes;
#   - a steady write load (POST /add, round robin over the nodes) that
#     rewrites a fixed set of NAMES names (1,000) with a new address each
#     time, so the data stays the same size and memory must stay flat; the
#     last acknowledged address of every name is remembered;
#   - a tracker announce flood from one address (random infohashes, one
#     keep-alive connection, as fast as the node answers) against node 2;
#   - a prober asking each node for a known name with dig once a second
#     (its own client, so "answers for everyone" is measured apart from
#     dnsperf's load).
#
# At the end: every name must hold its last acknowledged address on every
# node (0 acknowledged writes lost),
# every probe must have been answered, and every node's memory must be flat
# after the first minute (RSS at the end within 25% + 16 MiB of RSS at
# 60 s). Prints the figures; exits 1 if a check failed. A benchmark-style
# script, not a test: run it by hand.
#
#   bench/soak.sh                 # 10 minutes, the tokio binary
#   SECS=120 bench/soak.sh        # shorter
#   RUMOR_BIN=path bench/soak.sh  # another binary (rumor-smol, ...)
#
# Needs dnsperf, dig, curl, python3 (apt-get install -y dnsperf
# bind9-dnsutils curl).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-600}
WRITES_PER_S=${WRITES_PER_S:-20}
NAMES=${NAMES:-1000}
for tool in dnsperf dig curl python3; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install -y dnsperf bind9-dnsutils curl)"; exit 2; }
done
if [ -z "${RUMOR_BIN:-}" ]; then
  cargo build --release -q -p rumor-tokio
  RUMOR_BIN=${CARGO_TARGET_DIR:-target}/release/rumor
fi
echo "rumor binary: $RUMOR_BIN, $SECS s"
work=$(mktemp -d /tmp/rumor-soak.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

key=$(python3 -c 'import secrets;print(secrets.token_hex(32))')
token=$(python3 -c 'import secrets;print(secrets.token_hex(16))')
dns=() api=() gos=() npids=()
for i in 0 1 2; do
  dns+=("$(free_port)"); api+=("$(free_port)"); gos+=("$(free_port)")
done
for i in 0 1 2; do
  join=()
  [ "$i" -gt 0 ] && join=(--join "127.0.0.1:${gos[0]}")
  "$RUMOR_BIN" node --dns "127.0.0.1:${dns[$i]}" --api "127.0.0.1:${api[$i]}" --gossip "127.0.0.1:${gos[$i]}" \
    --cluster-key "$key" --api-token "$token" --data "$work/n$i" "${join[@]}" >"$work/n$i.log" 2>&1 &
  npids+=($!); pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:${api[$i]}/health" >/dev/null && break; sleep 0.1; done
done
# The names dnsperf asks for, and the probe's name.
python3 - "$work" <<'PY'
import json, random, sys
work = sys.argv[1]
random.seed(7)
recs = [{"name": f"host{i}.soak.test", "ips": [f"10.9.{i >> 8}.{i & 255}"], "ttl": 86400} for i in range(2000)]
recs.append({"name": "probe.soak.test", "ips": ["10.9.255.1"], "ttl": 86400})
json.dump(recs, open(f"{work}/records.json", "w"))
with open(f"{work}/queries.txt", "w") as f:
    for _ in range(100000):
        if random.random() < 0.9:
            f.write(f"host{random.randrange(2000)}.soak.test A\n")
        else:
            f.write(f"missing{random.randrange(10**6)}.soak.test A\n")
PY
curl -sf -X POST -H "Authorization: Bearer $token" "127.0.0.1:${api[0]}/add" --data-binary "@$work/records.json" >/dev/null
for i in 0 1 2; do
  for _ in $(seq 100); do
    [ "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "${dns[$i]}" probe.soak.test)" = 10.9.255.1 ] && break
    sleep 0.1
  done
done

# The rate one node answers on its own, for the 80% load.
full=$(dnsperf -s 127.0.0.1 -p "${dns[0]}" -d "$work/queries.txt" -l 5 -q 200 2>&1 | awk '/Queries per second/{printf "%d", $4}')
load=$((full * 8 / 10))
echo "one node answered $full qps alone; the soak runs dnsperf at $load qps in all"

# Load: dnsperf on each node at a third of 80%.
for i in 0 1 2; do
  dnsperf -s 127.0.0.1 -p "${dns[$i]}" -d "$work/queries.txt" -l "$SECS" -q 100 -Q $((load / 3)) -c 4 \
    >"$work/dnsperf$i.out" 2>&1 &
  pids+=($!)
done
# Writes, announces, probes and memory samples: one python process each.
python3 - "$work" "$SECS" "$WRITES_PER_S" "$token" "$NAMES" "${api[@]}" >"$work/writes.out" 2>&1 <<'PY' &
import http.client, json, sys, time
work, secs, rate, token, names = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
apis = [int(p) for p in sys.argv[6:]]
conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=10) for p in apis]
acked, refused, errors, count = {}, 0, 0, 0
start = time.time(); n = 0
while time.time() - start < secs:
    name = f"w{n % names}.soak.test"
    ip = f"10.{8 + (n >> 16) % 8}.{(n >> 8) & 255}.{n & 255}"
    c = conns[n % len(conns)]
    body = json.dumps({"name": name, "ips": [ip], "ttl": 86400})
    try:
        c.request("POST", "/add", body, {"Authorization": f"Bearer {token}"})
        r = c.getresponse(); r.read()
        if r.status == 200:
            acked[name] = ip
            count += 1
        else:
            refused += 1
    except Exception:
        errors += 1
        conns[n % len(conns)] = http.client.HTTPConnection("127.0.0.1", apis[n % len(apis)], timeout=10)
    n += 1
    time.sleep(max(0.0, start + n / rate - time.time()))
json.dump({"acked": acked, "count": count, "refused": refused, "errors": errors}, open(f"{work}/writes.json", "w"))
PY
pids+=($!); writer=$!
python3 - "$SECS" "${api[1]}" >"$work/flood.out" 2>&1 <<'PY' &
import http.client, os, sys, time, urllib.parse
secs, port = float(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
sent = limited = errors = 0
start = time.time()
while time.time() - start < secs:
    ih = urllib.parse.quote_from_bytes(os.urandom(20))
    pid = urllib.parse.quote_from_bytes(os.urandom(20))
    try:
        c.request("GET", f"/announce?info_hash={ih}&peer_id={pid}&port={1024 + sent % 60000}&uploaded=0&downloaded=0&left=1&compact=1")
        body = c.getresponse().read()
        if b"rate limit" in body:
            limited += 1
    except Exception:
        errors += 1
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent += 1
print(f"announces {sent} rate_limited {limited} errors {errors} per_s {sent / secs:.0f}")
PY
pids+=($!); flooder=$!
python3 - "$SECS" "${dns[@]}" >"$work/probe.out" 2>&1 <<'PY' &
import socket, struct, sys, time
secs = float(sys.argv[1]); ports = [int(p) for p in sys.argv[2:]]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
for label in b"probe.soak.test".split(b"."):
    q += bytes([len(label)]) + label
q += b"\x00" + struct.pack(">HH", 1, 1)
ok = fail = 0; worst = 0.0
start = time.time()
while time.time() - start < secs:
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2.0)
        t0 = time.time()
        try:
            s.sendto(q, ("127.0.0.1", p)); r = s.recv(512)
            if len(r) > 12 and r[:2] == q[:2] and struct.unpack(">H", r[6:8])[0] >= 1:
                ok += 1; worst = max(worst, time.time() - t0)
            else:
                fail += 1
        except OSError:
            fail += 1
        s.close()
    time.sleep(1)
print(f"probes {ok + fail} answered {ok} failed {fail} worst_ms {worst * 1000:.1f}")
PY
pids+=($!); prober=$!

# Memory: every 10 s.
echo "t_s rss_mib(n0 n1 n2)" >"$work/rss.txt"
t=0
rss60=()
while [ "$t" -lt "$SECS" ]; do
  sleep 10; t=$((t + 10))
  line="$t"
  for i in 0 1 2; do line="$line $(( $(rss_kib "${npids[$i]}") / 1024 ))"; done
  echo "$line" >>"$work/rss.txt"
  if [ "$t" -eq 60 ]; then for i in 0 1 2; do rss60+=("$(rss_kib "${npids[$i]}")"); done; fi
done
wait "$writer" "$flooder" "$prober" 2>/dev/null || true
sleep 3
[ ${#rss60[@]} -eq 0 ] && for i in 0 1 2; do rss60+=("$(rss_kib "${npids[$i]}")"); done

status=0
echo
echo "== dnsperf (80% load, per node)"
for i in 0 1 2; do
  awk -v n="$i" '/Queries sent/{s=$3} /Queries completed/{c=$3} /Queries lost/{l=$3} /Queries per second/{q=$4} END{printf "node %d: sent %s completed %s lost %s qps %s\n", n, s, c, l, q}' "$work/dnsperf$i.out"
done
echo "== probe (one known name, each node, every second)"
cat "$work/probe.out"
grep -q " failed 0 " "$work/probe.out" || status=1
echo "== tracker flood (node 1)"
cat "$work/flood.out"
echo "== writes"
python3 - "$work" "$token" "${api[@]}" <<'PY' || status=1
import json, sys, urllib.request
work, token = sys.argv[1], sys.argv[2]; apis = sys.argv[3:]
w = json.load(open(f"{work}/writes.json"))
acked = w["acked"]
lost_any = 0
for i, p in enumerate(apis):
    held = {}
    for r in json.load(urllib.request.urlopen(f"http://127.0.0.1:{p}/list", timeout=30)):
        if r.get("type") == "A":
            held[r["name"].rstrip(".")] = r["data"]
    lost = [n for n, ip in acked.items() if ip not in held.get(n, [])]
    lost_any += len(lost)
    print(f"node {i}: {len(acked) - len(lost)} of {len(acked)} names hold their last acknowledged address, {len(lost)} do not")
print(f"acknowledged writes {w['count']} over {len(acked)} names, refused {w['refused']}, errors {w['errors']}")
sys.exit(1 if lost_any else 0)
PY
echo "== memory (MiB every 10 s)"
column -t "$work/rss.txt" | awk 'NR == 1 || NR % 6 == 1 || NR == 2'
tail -1 "$work/rss.txt"
for i in 0 1 2; do
  end=$(rss_kib "${npids[$i]}")
  ok=$(awk -v a="${rss60[$i]}" -v b="$end" 'BEGIN{print (b <= a * 1.25 + 16384) ? "flat" : "GREW"}')
  echo "node $i: RSS at 60 s $(( ${rss60[$i]} / 1024 )) MiB, at the end $(( end / 1024 )) MiB: $ok"
  [ "$ok" = flat ] || status=1
done
[ "$status" -eq 0 ] && echo "soak: passed" || echo "soak: FAILED"
exit $status
