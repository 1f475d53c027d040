#!/usr/bin/env bash
# Issue 15's figure: N torrents (20 by default) added to one node through
# the API (`POST /torrents`) complete from libtorrent seeders (one
# libtorrent session seeding them all, announcing to the node's own
# tracker, so the session finds it through the overlay), with the
# active-download cap and a global download limit holding. Prints each
# torrent's completion time, the most torrents seen downloading at once,
# and the aggregate rate (verified bytes over the time from the first
# verified byte to the last) against the limit. A benchmark, not a test:
# exit 0 whatever the figures, non-zero only if something failed to run
# or a download did not complete.
#
#   bench/session20.sh                         # 20 x 6 MiB, 3 active, 8 MiB/s
#   N=20 SIZE_MIB=6 ACTIVE=3 LIMIT_MIB=8 bench/session20.sh
#   RUMOR_ADAPTER=smol bench/session20.sh      # the smol binary
#   RUMOR_BIN=target/debug/rumor bench/session20.sh
#
# Needs python3-libtorrent (for /usr/bin/python3) and curl; builds the
# chosen adapter in release mode unless RUMOR_BIN is set.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
SIZE_MIB=${SIZE_MIB:-6}
ACTIVE=${ACTIVE:-3}
LIMIT_MIB=${LIMIT_MIB:-8}
WORK=${WORK:-$(mktemp -d /tmp/rumor-session20.XXXXXX)}
PY=/usr/bin/python3
if [ -z "${RUMOR_BIN:-}" ]; then
  case ${RUMOR_ADAPTER:-tokio} in
    tokio) cargo build --release -q -p rumor-tokio; RUMOR_BIN=${CARGO_TARGET_DIR:-target}/release/rumor ;;
    smol) cargo build --release -q -p rumor-smol; RUMOR_BIN=${CARGO_TARGET_DIR:-target}/release/rumor-smol ;;
    *) echo "RUMOR_ADAPTER must be tokio or smol" >&2; exit 2 ;;
  esac
fi
echo "rumor binary: $RUMOR_BIN"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port); DNS=$(free_port); GOSSIP=$(free_port); BT=$(free_port); SEED=$(free_port)

mkdir -p "$WORK/src" "$WORK/torrents" "$WORK/downloads"
"$RUMOR_BIN" node --dns "127.0.0.1:$DNS" --api "127.0.0.1:$API" --gossip "127.0.0.1:$GOSSIP" \
  --data "$WORK/node" --downloads "$WORK/downloads" --bt-port "$BT" \
  --max-active-downloads "$ACTIVE" --max-download-rate "${LIMIT_MIB}M" > "$WORK/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "127.0.0.1:$API/health" >/dev/null && break; sleep 0.1; done

echo "making $N torrents of $SIZE_MIB MiB in $WORK"
for i in $(seq -w 1 "$N"); do
  head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src/t$i.bin"
  "$RUMOR_BIN" create "$WORK/src/t$i.bin" -a "http://127.0.0.1:$API/announce" --piece-size 262144 \
    -o "$WORK/torrents/t$i.torrent" >/dev/null 2>&1
done

# One libtorrent session seeding every torrent, announcing to the node.
cat > "$WORK/seed.py" <<'EOF'
import sys, time, glob, libtorrent as lt
torrents, save, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = lt.session({"listen_interfaces": "127.0.0.1:%d" % port, "enable_dht": False, "enable_lsd": False,
                "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
                "enable_incoming_utp": False, "allow_multiple_connections_per_ip": True,
                "active_seeds": 1000, "active_limit": 1000, "upload_rate_limit": 0})
for t in sorted(glob.glob(torrents + "/*.torrent")):
    p = lt.add_torrent_params(); p.ti = lt.torrent_info(t); p.save_path = save
    p.flags |= lt.torrent_flags.seed_mode
    s.add_torrent(p)
while True:
    time.sleep(1)
EOF
$PY "$WORK/seed.py" "$WORK/torrents" "$WORK/src" "$SEED" > "$WORK/seed.log" 2>&1 &
pids+=($!)
sleep 2

for t in "$WORK"/torrents/*.torrent; do
  curl -sf -X POST --data-binary "@$t" -H 'Content-Type: application/x-bittorrent' "127.0.0.1:$API/torrents" >/dev/null
done
echo "added $N torrents through POST /torrents; watching GET /torrents"

$PY - "$API" "$N" "$SIZE_MIB" "$ACTIVE" "$LIMIT_MIB" <<'EOF'
import json, sys, time, urllib.request
api, n, size_mib, active, limit_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
start = time.time()
first_byte = None
done_at = {}
most = 0
over = 0
while len(done_at) < n:
    if time.time() - start > 600:
        print("TIMEOUT: %d of %d complete" % (len(done_at), n)); sys.exit(1)
    ts = json.load(urllib.request.urlopen("http://127.0.0.1:%s/torrents" % api))["torrents"]
    now = time.time()
    downloading = sum(1 for t in ts if t["state"] == "downloading")
    most = max(most, downloading)
    over += downloading > active
    total = sum(t["done"] for t in ts)
    if first_byte is None and total > 0:
        first_byte = (now, total)
    for t in ts:
        if t["state"] == "seeding" and t["progress"] == 1.0 and t["name"] not in done_at:
            done_at[t["name"]] = now
    time.sleep(0.2)
end = max(done_at.values())
for name, t in sorted(done_at.items(), key=lambda kv: kv[1]):
    print("%-10s complete at %6.1f s" % (name, t - start))
bytes_total = n * (size_mib << 20) - first_byte[1]
rate = bytes_total / (end - first_byte[0])
limit = limit_mib << 20
print("most downloading at once: %d (cap %d; polls over the cap: %d)" % (most, active, over))
print("aggregate: %.2f MiB/s against a limit of %d MiB/s (%+.1f%%), %d MiB in %.1f s"
      % (rate / 2**20, limit_mib, (rate / limit - 1) * 100, bytes_total >> 20, end - first_byte[0]))
EOF
for i in $(seq -w 1 "$N"); do
  cmp -s "$WORK/src/t$i.bin" "$WORK/downloads/t$i.bin" || { echo "t$i.bin differs"; exit 1; }
done
echo "all $N downloads are byte-identical to their sources"
