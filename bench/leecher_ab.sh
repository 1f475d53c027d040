#!/usr/bin/env bash
# Two rumor binaries side by side as leechers: one libtorrent seeder over
# loopback, then legs A, B, A, B, ... each downloading the whole torrent
# from it. On a VM whose speed moves by tens of percent from one minute to
# the next, alternating legs is the only fair way to tell whether a change
# to the receive path saves CPU. A benchmark, not a test.
#
#   bench/leecher_ab.sh OLD_BINARY NEW_BINARY          # 5 rounds of 1 GiB
#   ROUNDS=8 SIZE_MIB=512 bench/leecher_ab.sh A B
#
# Prints each leg's MiB/s, CPU seconds per GiB (user, sys) and peak RSS,
# then each side's mean. Needs python3-libtorrent (for /usr/bin/python3)
# and /usr/bin/time. Before each leg it syncs and touches 1.5 GiB of
# memory, as bench/bt_loopback.sh does (see there why).
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: bench/leecher_ab.sh BINARY_A BINARY_B}
B=${2:?usage: bench/leecher_ab.sh BINARY_A BINARY_B}
ROUNDS=${ROUNDS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
PY=/usr/bin/python3
LT=adapters/conformance/common/lt_peer.py
WORK=$(mktemp -d /tmp/rumor-ab.XXXXXX)
SEED=
cleanup() {
  [ -n "$SEED" ] && kill "$SEED" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/src"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src/bench.bin"
"$A" create "$WORK/src/bench.bin" -o "$WORK/bench.torrent" >/dev/null 2>&1
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$PY "$LT" seed "$WORK/bench.torrent" "$WORK/src" "$PORT" > "$WORK/seed.log" 2>&1 &
SEED=$!
until grep -q 'state=seeding' "$WORK/seed.log"; do sleep 0.2; done

warm() {
  sync
  $PY -c "
import mmap
n = 1536 << 20
m = mmap.mmap(-1, n)
for i in range(0, n, 4096):
    m[i] = 1
"
}

: > "$WORK/legs"
for _ in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=$A
    [ "$side" = B ] && bin=$B
    rm -rf "$WORK/out" && mkdir -p "$WORK/out"
    warm
    /usr/bin/time -f "%U %S %M" -o "$WORK/time" "$bin" get "$WORK/bench.torrent" -o "$WORK/out" --no-seed \
      --quiet --port 0 --peer "127.0.0.1:$PORT" > "$WORK/get.log" 2>&1
    cmp -s "$WORK/src/bench.bin" "$WORK/out/bench.bin" || { echo "leg $side: the copy differs"; exit 1; }
    secs=$(grep -o 'in [0-9.]* s' "$WORK/get.log" | tail -1 | awk '{print $2}')
    read -r user sys rss < "$WORK/time"
    echo "$side $secs $user $sys $rss" >> "$WORK/legs"
    awk -v s="$side" -v t="$secs" -v u="$user" -v y="$sys" -v r="$rss" -v mib="$SIZE_MIB" 'BEGIN {
      g = mib / 1024
      printf "%s %7.1f MiB/s  CPU %.2f s/GiB (user %.2f, sys %.2f)  peak RSS %.1f MiB\n", s, mib / t, (u + y) / g, u / g, y / g, r / 1024 }'
  done
done
awk -v mib="$SIZE_MIB" '{ n[$1]++; t[$1] += $2; c[$1] += $3 + $4; u[$1] += $3 } END {
  g = mib / 1024
  for (s in n) printf "mean %s: %.1f MiB/s, CPU %.2f s/GiB (user %.2f)\n", s, mib / (t[s] / n[s]), c[s] / n[s] / g, u[s] / n[s] / g }' "$WORK/legs" | sort
