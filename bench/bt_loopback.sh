#!/usr/bin/env bash
# BitTorrent over loopback: one libtorrent seeder, then a rumor leecher and
# a libtorrent leecher downloading the same torrent from it, one after the
# other in the same run. Prints MiB/s of each, their ratio, CPU seconds per
# GiB and peak resident memory. Then rumor seeds its copy to a libtorrent
# leecher and to a rumor leecher: the pair "rumor seeding to rumor" against
# "libtorrent seeding to libtorrent" (the libtorrent leecher above), with
# their ratio. A benchmark, not a test.
#
# The libtorrent seeder checks its data before the first leecher starts
# (SEED_MODE=1 for libtorrent's seed mode instead, which hashes each piece
# the first time a peer asks for it: the first leecher then pays for the
# seeder's hashing and the second does not).
#
#   bench/bt_loopback.sh                  # 1 GiB, the tokio binary (rumor)
#   SIZE_MIB=256 bench/bt_loopback.sh     # smaller
#   RUMOR_ADAPTER=smol bench/bt_loopback.sh   # the smol binary (rumor-smol)
#   RUMOR_BIN=/path/to/binary bench/bt_loopback.sh
#   WARM_MIB=0 bench/bt_loopback.sh      # no memory warming before each leg
#
# Needs python3-libtorrent (for /usr/bin/python3) and /usr/bin/time; builds
# the chosen adapter in release mode unless RUMOR_BIN is set.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
WORK=${WORK:-$(mktemp -d /tmp/rumor-bt-bench.XXXXXX)}
LT=adapters/conformance/common/lt_peer.py
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

mkdir -p "$WORK/src" "$WORK/rumor" "$WORK/lt"
echo "making $SIZE_MIB MiB of random data in $WORK"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src/bench.bin"
"$RUMOR_BIN" create "$WORK/src/bench.bin" -o "$WORK/bench.torrent" >/dev/null 2>&1

SEED_PORT=$(free_port)
if [ "${SEED_MODE:-0}" = 1 ]; then
  $PY "$LT" seed "$WORK/bench.torrent" "$WORK/src" "$SEED_PORT" --seed-mode > "$WORK/seed.log" 2>&1 &
  pids+=($!)
  sleep 2
else
  $PY "$LT" seed "$WORK/bench.torrent" "$WORK/src" "$SEED_PORT" > "$WORK/seed.log" 2>&1 &
  pids+=($!)
  until grep -q 'state=seeding' "$WORK/seed.log"; do sleep 0.2; done
fi

# Each timed leg starts with no dirty pages left by the legs before it, so
# no leg pays for another's write-back, and right after WARM_MIB (1536) MiB
# of memory were touched and freed. On this virtual machine memory freed a
# while ago goes back to the host, and a leg whose page-cache writes land
# on such pages paid 2-3 s/GiB more system time (the kernel's copy into the
# page cache waiting on the host): the fourth leg always did, the others
# now and then. Freshly freed pages are backed, so every leg starts alike.
# On a machine that is not a VM this costs a second and changes nothing.
WARM_MIB=${WARM_MIB:-1536}
settle() {
  sync
  if [ "$WARM_MIB" -gt 0 ]; then
    $PY -c "
import mmap
n = $WARM_MIB << 20
m = mmap.mmap(-1, n)
for i in range(0, n, 4096):
    m[i] = 1
"
  fi
}

# rumor leecher
settle
/usr/bin/time -v -o "$WORK/rumor.time" "$RUMOR_BIN" get "$WORK/bench.torrent" -o "$WORK/rumor" --no-seed --quiet \
  --port "$(free_port)" --peer "127.0.0.1:$SEED_PORT" > "$WORK/rumor.log" 2>&1
cmp "$WORK/src/bench.bin" "$WORK/rumor/bench.bin" || { echo "rumor's copy differs"; exit 1; }

# libtorrent leecher
settle
/usr/bin/time -v -o "$WORK/lt.time" $PY "$LT" leech "$WORK/bench.torrent" "$WORK/lt" "$(free_port)" \
  --peer "127.0.0.1:$SEED_PORT" --timeout 600 > "$WORK/lt.log" 2>&1
cmp "$WORK/src/bench.bin" "$WORK/lt/bench.bin" || { echo "libtorrent's copy differs"; exit 1; }

# Extra leg: rumor seeds its copy to another libtorrent leecher.
RSEED_PORT=$(free_port)
/usr/bin/time -v -o "$WORK/rseed.time" "$RUMOR_BIN" seed "$WORK/bench.torrent" "$WORK/rumor" --quiet \
  --port "$RSEED_PORT" > "$WORK/rseed.log" 2>&1 &
TIME_PID=$!
pids+=($TIME_PID)
mkdir -p "$WORK/lt2"
sleep 1
while ! grep -q listening "$WORK/rseed.log"; do sleep 0.2; done
settle
$PY "$LT" leech "$WORK/bench.torrent" "$WORK/lt2" "$(free_port)" --peer "127.0.0.1:$RSEED_PORT" --timeout 600 \
  > "$WORK/lt2.log" 2>&1
cmp "$WORK/src/bench.bin" "$WORK/lt2/bench.bin" || { echo "the copy from rumor's seeder differs"; exit 1; }
# The pair: a rumor leecher from the same rumor seeder.
mkdir -p "$WORK/rumor2"
settle
/usr/bin/time -v -o "$WORK/rumor2.time" "$RUMOR_BIN" get "$WORK/bench.torrent" -o "$WORK/rumor2" --no-seed --quiet \
  --port "$(free_port)" --peer "127.0.0.1:$RSEED_PORT" > "$WORK/rumor2.log" 2>&1
cmp "$WORK/src/bench.bin" "$WORK/rumor2/bench.bin" || { echo "rumor's copy from rumor differs"; exit 1; }
kill -INT "$(pgrep -P "$TIME_PID")"
wait "$TIME_PID" || true

field() { grep "$1" "$2" | awk -F': ' '{print $2}'; }
secs() { # wall clock h:mm:ss or m:ss.ss -> seconds
  echo "$1" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }'
}
report() { # name timefile transfer_seconds
  local wall user sys rss
  wall=$(secs "$(field 'Elapsed (wall clock)' "$2")")
  user=$(field 'User time' "$2"); sys=$(field 'System time' "$2")
  rss=$(field 'Maximum resident set size' "$2")
  awk -v n="$1" -v mib="$SIZE_MIB" -v t="$3" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN {
    printf "%-10s %8.1f MiB/s (transfer %.2f s, process %.2f s)  CPU %.2f s/GiB (user %.2f, sys %.2f)  peak RSS %.1f MiB\n",
      n, mib / t, t, w, (u + s) / (mib / 1024), u, s, r / 1024 }'
}
RT=$(grep -o 'in [0-9.]* s' "$WORK/rumor.log" | tail -1 | awk '{print $2}')
LTT=$(grep '^DONE' "$WORK/lt.log" | awk '{print $3}')
seeder=checked; [ "${SEED_MODE:-0}" = 1 ] && seeder="seed-mode"
echo "size: $SIZE_MIB MiB over loopback from a libtorrent $($PY -c 'import libtorrent; print(libtorrent.__version__)') seeder ($seeder)"
report rumor "$WORK/rumor.time" "$RT"
report libtorrent "$WORK/lt.time" "$LTT"
awk -v a="$RT" -v b="$LTT" 'BEGIN { printf "ratio rumor/libtorrent: %.2fx\n", b / a }'
LT2=$(grep '^DONE' "$WORK/lt2.log" | awk '{print $3}')
awk -v mib="$SIZE_MIB" -v t="$LT2" -v r="$(field 'Maximum resident set size' "$WORK/rseed.time")" 'BEGIN {
  printf "extra: rumor seeder -> libtorrent leecher %.1f MiB/s; rumor seeder peak RSS %.1f MiB (includes its start-up check)\n",
    mib / t, r / 1024 }'
R2=$(grep -o 'in [0-9.]* s' "$WORK/rumor2.log" | tail -1 | awk '{print $2}')
report rumor2 "$WORK/rumor2.time" "$R2"
awk -v mib="$SIZE_MIB" -v a="$R2" -v b="$LTT" 'BEGIN {
  printf "pair: rumor seeder -> rumor leecher %.1f MiB/s, libtorrent seeder -> libtorrent leecher %.1f MiB/s: %.2fx\n",
    mib / a, mib / b, b / a }'
