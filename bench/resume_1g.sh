#!/usr/bin/env bash
# Issue 15's fast-resume figure: a node holding a complete 1 GiB torrent is
# stopped and started again; prints how long after its API first answers
# the torrent is reported complete, and how many bytes the process read
# from files meanwhile (/proc/PID/io rchar: it must not read the data
# again). Then one byte of the file is changed while the node is stopped:
# the next start rechecks it, finds the bad piece and fetches it again from
# a libtorrent seeder, and the file is compared with its source. A
# benchmark, not a test: non-zero only if a step failed.
#
#   bench/resume_1g.sh                    # 1 GiB, the tokio binary
#   SIZE_MIB=256 bench/resume_1g.sh
#   RUMOR_BIN=target/debug/rumor bench/resume_1g.sh
#
# Needs python3-libtorrent (for /usr/bin/python3) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
WORK=${WORK:-$(mktemp -d /tmp/rumor-resume.XXXXXX)}
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
node_pid=
cleanup() {
  for p in "${pids[@]}" $node_pid; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port); DNS=$(free_port); GOSSIP=$(free_port); BT=$(free_port); SEED=$(free_port)
now() { date +%s.%N; }

start_node() {
  "$RUMOR_BIN" node --dns "127.0.0.1:$DNS" --api "127.0.0.1:$API" --gossip "127.0.0.1:$GOSSIP" \
    --data "$WORK/node" --downloads "$WORK/downloads" --bt-port "$BT" >> "$WORK/node.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 600); do curl -sf "127.0.0.1:$API/health" >/dev/null && return 0; sleep 0.01; done
  echo "the node did not answer"; tail "$WORK/node.log"; exit 1
}
stop_node() {
  kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=
}
state() { curl -sf "127.0.0.1:$API/torrents/$IH" | $PY -c 'import json,sys; t=json.load(sys.stdin); print(t["state"], t["progress"])'; }
wait_state() { # wait_state STATE SECONDS
  for _ in $(seq $(($2 * 20))); do
    s=$(state 2>/dev/null || true)
    [ "${s%% *}" = "$1" ] && [ "${s#* }" = "1.0" ] && return 0
    sleep 0.05
  done
  echo "not $1 after $2 s: $(state)"; tail -5 "$WORK/node.log"; exit 1
}

mkdir -p "$WORK/src" "$WORK/downloads"
echo "making $SIZE_MIB MiB of random data in $WORK"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src/big.bin"
cp "$WORK/src/big.bin" "$WORK/downloads/big.bin"
"$RUMOR_BIN" create "$WORK/src/big.bin" -a "http://127.0.0.1:$API/announce" -o "$WORK/big.torrent" >/dev/null 2>&1

start_node
IH=$(curl -sf -X POST --data-binary "@$WORK/big.torrent" -H 'Content-Type: application/x-bittorrent' \
  "127.0.0.1:$API/torrents" | $PY -c 'import json,sys; print(json.load(sys.stdin)["infohash"])')
t0=$(now); wait_state seeding 600; t1=$(now)
printf 'first add: the data already there was checked in %.1f s\n' "$($PY -c "print($t1-$t0)")"
stop_node

echo "restart with the files unchanged"
t0=$(now); start_node; t_api=$(now)
wait_state seeding 30; t_done=$(now)
rchar=$(awk '/^rchar/ {print $2}' /proc/$node_pid/io)
printf 'complete %.3f s after the API answered (process start to API: %.3f s); bytes read by the node: %d (%.2f%% of the torrent)\n' \
  "$($PY -c "print($t_done-$t_api)")" "$($PY -c "print($t_api-$t0)")" "$rchar" "$($PY -c "print(100*$rchar/($SIZE_MIB<<20))")"
grep -o '[0-9]* pieces trusted.*' "$WORK/node.log" | tail -1 || true
stop_node

echo "one byte changed in the middle of the file while the node was stopped"
printf '\xff' | dd of="$WORK/downloads/big.bin" bs=1 seek=$(((SIZE_MIB << 19) + 12345)) conv=notrunc status=none
cat > "$WORK/seed.py" <<'EOF'
import sys, time, libtorrent as lt
torrent, save, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = lt.session({"listen_interfaces": "127.0.0.1:%d" % port, "enable_dht": False, "enable_lsd": False,
                "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
                "enable_incoming_utp": False, "allow_multiple_connections_per_ip": True})
p = lt.add_torrent_params(); p.ti = lt.torrent_info(torrent); p.save_path = save
p.flags |= lt.torrent_flags.seed_mode
s.add_torrent(p)
while True:
    time.sleep(1)
EOF
$PY "$WORK/seed.py" "$WORK/big.torrent" "$WORK/src" "$SEED" > "$WORK/seed.log" 2>&1 &
pids+=($!)
t0=$(now); start_node; t_api=$(now)
wait_state seeding 900; t_done=$(now)
printf 'rechecked and repaired %.1f s after the API answered\n' "$($PY -c "print($t_done-$t_api)")"
grep -o '[0-9]* pieces trusted.*' "$WORK/node.log" | tail -1 || true
cmp "$WORK/src/big.bin" "$WORK/downloads/big.bin" && echo "the repaired file is byte-identical to its source"
stop_node
