#!/usr/bin/env bash
# Spreads one file across a real (single-node) Docker Swarm with rumor's
# BitTorrent client, peers found only through the cluster's overlay, and
# compares the time with the Kumar-Ross lower bound.
#
#   deploy/distribute-test.sh [LEECHERS]          (default 20, at least 2)
#
# Builds the FROM scratch image, starts dockerd and a swarm if none is
# running, makes a random file (256 MiB) and its torrent (no tracker), and
# deploys deploy/distribute-stack.yml: a rumor cluster (`node`), then
# LEECHERS `rumor get` replicas, then one `rumor seed` replica. Seeder and
# leechers join the cluster's gossip (--overlay) and find each other there
# only: no tracker, no --peer, --no-lsd, --no-dht. Every container's
# upload and download are capped with tc from the host, in its network
# namespace (nsenter): a tbf on the overlay interface for what it sends, an
# ifb with a tbf for what it receives. The leechers are capped before the
# seeder starts, and the clock starts when the seeder's container does, so
# the measured time is the time to spread the file, as the bound counts it:
#
#   T_min = max(F / u_s, F / d_min, N F / (u_s + sum u_i))
#
# Prints each leecher's finish time, the swarm's time over the bound
# (target: within 1.3x), the seeder's upload over the file size (ideal:
# close to 1x) and checks that every leecher verified every piece and that
# the sha256 of its file is the source's: only a failed check, not the
# ratio, makes it exit non-zero. Whatever it created is removed on
# any exit: stack, config, image, the swarm if it initialised it, dockerd
# if it started it.
#
# TCP congestion control: the containers' network namespaces take the
# host's default when they are made, and a container may not change it.
# Many VM hosts (this one) default to BBR (v1), which paces at its own
# bandwidth estimate and barely backs off on loss; in front of these tbf
# queues (tail drop, 50 ms) it had 10.5 % of the packets dropped at the
# senders' own caps, and the swarm took 1.31x the bound where CUBIC, the
# kernel's own default, took 1.24x with 0.2 % dropped. So the host's default
# is set to RUMOR_DIST_TCP_CC (cubic) while the stack is made, and put back
# on exit; RUMOR_DIST_TCP_CC=host keeps the host's. The summary says which.
#
# Needs root (dockerd, nsenter, tc), docker, nsenter, tc (iproute2), curl,
# sha256sum, and the kernel's ifb, tbf, u32 and mirred.
#
# Environment: RUMOR_DIST_SIZE_MIB (file size, 256), RUMOR_DIST_UP_KIB and
# RUMOR_DIST_DOWN_KIB (each leecher's caps, KiB/s, 4096 each),
# RUMOR_DIST_SEED_UP_KIB (the seeder's upload cap, 4096), RUMOR_DIST_NODES
# (cluster nodes, 3), RUMOR_DIST_TIMEOUT (seconds the spread may take, 600),
# RUMOR_DIST_STACK (stack name, rumordist), RUMOR_DIST_IMAGE (use this
# image, built already, and keep it), RUMOR_TEST_KEEP_IMAGE=1 (keep the
# image built here), RUMOR_DIST_LOGS=DIR (keep every container's log and
# a timeline of each client's progress and rates there), RUMOR_DIST_TCP_CC
# (the containers' TCP congestion control, cubic; host: leave it), RUMOR_ADAPTER
# (tokio or smol), CARGO_TARGET_DIR.
set -euo pipefail

LEECHERS=${1:-20}
[[ $LEECHERS =~ ^[0-9]+$ ]] && ((LEECHERS >= 2)) || { echo "usage: $0 [LEECHERS>=2]" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case ${RUMOR_ADAPTER:-tokio} in
    tokio) BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/rumor ;;
    smol) BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/rumor-smol ;;
    *) echo "RUMOR_ADAPTER must be tokio or smol" >&2; exit 2 ;;
esac
export RUMOR_ADAPTER=${RUMOR_ADAPTER:-tokio}
SIZE_MIB=${RUMOR_DIST_SIZE_MIB:-256}
UP_KIB=${RUMOR_DIST_UP_KIB:-4096}
DOWN_KIB=${RUMOR_DIST_DOWN_KIB:-4096}
SEED_UP_KIB=${RUMOR_DIST_SEED_UP_KIB:-4096}
NODES=${RUMOR_DIST_NODES:-3}
TIMEOUT=${RUMOR_DIST_TIMEOUT:-600}
STACK=${RUMOR_DIST_STACK:-rumordist}
NETWORK=${STACK}_swarm
CONFIG=${STACK}_torrent_$$
IMAGE=${RUMOR_DIST_IMAGE:-rumor:distribute-test-$$}
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
CONTROL=127.0.0.1:7000
WORK=$(mktemp -d /tmp/rumor-distribute-test.XXXXXX)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
    log "FAIL: $*"
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

for tool in docker nsenter tc ip curl sha256sum timeout awk sysctl; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
((EUID == 0)) || die "run as root (dockerd, nsenter, tc)"

# ---------------------------------------------------------------- cleanup

STARTED_DOCKERD= DOCKERD_PID= CREATED_SWARM= HAD_GWBRIDGE= CREATED_CONFIG= CREATED_STACK= CREATED_IMAGE=
HOST_TCP_CC=

# Polls "$@" every half second for at most $1 seconds.
wait_for() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    until "$@"; do
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}

stack_gone() {
    [[ -z $(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK") ]] &&
        ! docker network inspect "$NETWORK" >/dev/null 2>&1
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    log "cleaning up"
    if [[ -n ${RUMOR_DIST_LOGS:-} && -n $CREATED_STACK ]]; then
        mkdir -p "$RUMOR_DIST_LOGS"
        cp "$WORK/timeline" "$RUMOR_DIST_LOGS/timeline" 2>/dev/null
        local c
        for c in $(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK"); do
            docker logs -t "$c" >"$RUMOR_DIST_LOGS/$(docker inspect -f '{{index .Config.Labels "com.docker.swarm.task.name"}}' "$c" | cut -d. -f1-2).log" 2>&1
        done
        log "logs and timeline kept in $RUMOR_DIST_LOGS"
    fi
    if [[ -n $CREATED_STACK ]]; then
        docker stack rm "$STACK" >/dev/null
        wait_for 90 stack_gone || log "warning: the stack's containers or network are still there"
    fi
    [[ -n $HOST_TCP_CC ]] && sysctl -qw "net.ipv4.tcp_congestion_control=$HOST_TCP_CC"
    [[ -n $CREATED_CONFIG ]] && docker config rm "$CONFIG" >/dev/null
    [[ -n $CREATED_IMAGE && -z ${RUMOR_TEST_KEEP_IMAGE:-} ]] && docker image rm "$IMAGE" >/dev/null
    if [[ -n $CREATED_SWARM ]]; then
        timeout 60 docker swarm leave --force >/dev/null
        [[ -z $HAD_GWBRIDGE ]] && docker network rm docker_gwbridge >/dev/null 2>&1
    fi
    if [[ -n $STARTED_DOCKERD && -n $DOCKERD_PID ]]; then
        kill "$DOCKERD_PID" 2>/dev/null
        wait_for 30 bash -c "! kill -0 $DOCKERD_PID 2>/dev/null" || kill -9 "$DOCKERD_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
    if ((rc == 0)); then log "PASS"; else log "exit status $rc"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------ docker and swarm

if ! timeout 10 docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || die "dockerd is not running and not installed (apt-get install -y docker.io)"
    log "starting dockerd"
    # In its own session, so a Ctrl-C reaches the script, not dockerd.
    setsid dockerd >"$WORK/dockerd.log" 2>&1 </dev/null &
    DOCKERD_PID=$!
    STARTED_DOCKERD=1
    wait_for 60 bash -c 'timeout 5 docker info >/dev/null 2>&1' || {
        tail -20 "$WORK/dockerd.log" >&2
        die "dockerd did not come up"
    }
    [[ -s /var/run/docker.pid ]] && DOCKERD_PID=$(cat /var/run/docker.pid)
fi
if [[ $(docker info -f '{{.Swarm.LocalNodeState}}') != active ]]; then
    docker network inspect docker_gwbridge >/dev/null 2>&1 && HAD_GWBRIDGE=1
    log "docker swarm init"
    timeout 60 docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    CREATED_SWARM=1
fi
docker stack ls --format '{{.Name}}' | grep -qx "$STACK" && die "a stack $STACK exists already; remove it or set RUMOR_DIST_STACK"

# ------------------------------------------------------------- the image

if [[ -n ${RUMOR_DIST_IMAGE:-} ]]; then
    docker image inspect "$IMAGE" >/dev/null 2>&1 || die "RUMOR_DIST_IMAGE=$IMAGE: no such image"
    [[ -x $BIN ]] || die "$BIN is needed (to make the torrent)"
else
    t=$(now)
    "$HERE/build-image.sh" "$IMAGE"
    CREATED_IMAGE=1
    log "image $IMAGE built in $(since "$t") s"
fi

# ------------------------------------------------------ the file, the torrent

mkdir -p "$WORK/seed"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/seed/blob"
FILE_BYTES=$(stat -c %s "$WORK/seed/blob")
SHA=$(sha256sum "$WORK/seed/blob" | cut -d' ' -f1)
# No -a: the torrent names no tracker at all.
"$BIN" create "$WORK/seed/blob" -o "$WORK/blob.torrent" >"$WORK/create.out" 2>&1 ||
    die "rumor create: $(cat "$WORK/create.out")"
# The seeder runs as the image's user and opens the file read-write.
chown -R 65532:65532 "$WORK/seed"
docker config create "$CONFIG" "$WORK/blob.torrent" >/dev/null
CREATED_CONFIG=1
log "file: $SIZE_MIB MiB of random bytes, sha256 ${SHA:0:16}..., torrent $(stat -c %s "$WORK/blob.torrent") bytes: $(tr '\n' ' ' <"$WORK/create.out")"

# ----------------------------------------------------------------- deploy

deploy() { # seeders leechers
    RUMOR_IMAGE=$IMAGE RUMOR_CLUSTER_KEY=$KEY RUMOR_TORRENT_CONFIG=$CONFIG RUMOR_SEED_DIR=$WORK/seed \
        RUMOR_NODES=$NODES RUMOR_SEEDERS=$1 RUMOR_LEECHERS=$2 \
        timeout 120 docker stack deploy -c "$HERE/distribute-stack.yml" "$STACK" 2>&1
}

# Running containers of a service, one a line: container-id pid slot overlay-ip.
tasks() { # service
    local ids
    ids=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$1" --filter status=running)
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086
    docker inspect -f "{{.Id}} {{.State.Pid}} {{index .Config.Labels \"com.docker.swarm.task.name\"}} {{with index .NetworkSettings.Networks \"$NETWORK\"}}{{.IPAddress}}{{end}}" $ids 2>/dev/null |
        awk '$2 > 0 && $4 != "" { split($3, t, "."); print substr($1, 1, 12), $2, t[2], $4 }' | sort -k3n
}
count() { [[ $(tasks "$1" | wc -l) -eq $2 ]]; }

# A node's /metrics, or a client's control /metrics, through its own loopback.
get() { nsenter -t "$1" -n curl -s -m 3 "http://$2" </dev/null 2>/dev/null; }
metric() { # pid addr name-and-labels-regex
    get "$1" "$2/metrics" | awk -v re="$3" '$0 ~ re { print $NF; exit }'
}

# Caps what a container sends and what it receives: a tbf on its overlay
# interface, and its ingress redirected to an ifb with another tbf. The
# rates count whole frames (headers too). A burst of 64 KiB is a few ms at
# these rates; 50 ms of queue keeps TCP's round trips short.
cap() { # pid ip up-KiB/s down-KiB/s
    local pid=$1 ip=$2 dev
    dev=$(nsenter -t "$pid" -n ip -o -4 addr show | awk -v ip="$ip" '$4 ~ "^" ip "/" { print $2; exit }')
    [[ -n $dev ]] || return 1
    dev=${dev%@*}
    nsenter -t "$pid" -n tc qdisc replace dev "$dev" root tbf rate "${3}KiBps" burst 64kb latency 50ms &&
        nsenter -t "$pid" -n ip link add ifb0 type ifb &&
        nsenter -t "$pid" -n ip link set ifb0 up &&
        nsenter -t "$pid" -n tc qdisc add dev ifb0 root tbf rate "${4}KiBps" burst 64kb latency 50ms &&
        nsenter -t "$pid" -n tc qdisc add dev "$dev" handle ffff: ingress &&
        nsenter -t "$pid" -n tc filter add dev "$dev" parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev ifb0
}
# Bytes a container's overlay interface sent, from its namespace's counters.
tx_bytes() { # pid ip
    local dev
    dev=$(nsenter -t "$1" -n ip -o -4 addr show | awk -v ip="$2" '$4 ~ "^" ip "/" { print $2; exit }')
    awk -v d="${dev%@*}:" '$1 == d { print $10 }' "/proc/$1/net/dev"
}

TCP_CC=${RUMOR_DIST_TCP_CC:-cubic}
host_cc=$(sysctl -n net.ipv4.tcp_congestion_control)
if [[ $TCP_CC == host ]]; then
    TCP_CC=$host_cc
elif [[ $host_cc != "$TCP_CC" ]]; then
    HOST_TCP_CC=$host_cc
    sysctl -qw "net.ipv4.tcp_congestion_control=$TCP_CC" || die "cannot set TCP congestion control $TCP_CC (available: $(sysctl -n net.ipv4.tcp_available_congestion_control))"
    log "TCP congestion control for the containers: $TCP_CC (the host's $HOST_TCP_CC is put back on exit)"
fi

CREATED_STACK=1
out=$(deploy 0 0) || die "docker stack deploy failed: $out"
members_alive() { # want
    local pid
    pid=$(tasks node | awk 'NR == 1 { print $2 }')
    [[ -n $pid ]] || return 1
    local alive
    alive=$(metric "$pid" 127.0.0.1:6969 '^rumor_members\\{state="alive"\\}')
    [[ ${alive:-0} -ge $1 ]]
}
wait_for 180 count node "$NODES" || die "the $NODES cluster nodes did not start"
wait_for 120 members_alive $((NODES - 1)) || die "the cluster did not form"
log "cluster: $NODES nodes, each alive to the others"

# The leechers first: they join the overlay and announce themselves, and
# are capped before there is anything to fetch.
t=$(now)
out=$(deploy 0 "$LEECHERS") || die "docker stack deploy (leechers) failed: $out"
wait_for 300 count leecher "$LEECHERS" || die "$(tasks leecher | wc -l) of $LEECHERS leechers running after 300 s"
tasks leecher >"$WORK/leechers"
while read -r cid pid slot ip; do
    cap "$pid" "$ip" "$UP_KIB" "$DOWN_KIB" || die "cannot cap leecher $slot ($cid)"
done <"$WORK/leechers"
# Every client is a cluster member too: all of them alive on a node.
wait_for 120 members_alive $((NODES - 1 + LEECHERS)) || die "not every leecher joined the overlay"
log "$LEECHERS leechers running, capped (up $UP_KIB KiB/s, down $DOWN_KIB KiB/s) and in the overlay, $(since "$t") s"

# Then the seeder; the clock starts with its container.
out=$(deploy 1 "$LEECHERS") || die "docker stack deploy (seeder) failed: $out"
# Polled finely: until its cap is on, the seeder sends at full speed (the
# bytes it sent by then are printed).
seeder_up() {
    local id
    id=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_seeder" --filter status=running)
    [[ -n $id ]] && [[ $(docker inspect -f '{{.State.Pid}}' "$id") -gt 0 ]]
}
end=$((SECONDS + 120))
until seeder_up; do
    ((SECONDS < end)) || die "the seeder did not start"
    sleep 0.05
done
read -r SCID SPID _ SIP < <(tasks seeder)
cap "$SPID" "$SIP" "$SEED_UP_KIB" "$DOWN_KIB" || die "cannot cap the seeder"
capped_tx=$(tx_bytes "$SPID" "$SIP")
T0=$(date -d "$(docker inspect -f '{{.State.StartedAt}}' "$SCID")" +%s.%N)
log "seeder $SCID started, capped (up $SEED_UP_KIB KiB/s) $(since "$T0") s after its start, having sent $capped_tx bytes"

# ------------------------------------------------------------ the spread

# Leechers that logged their completion ("every piece verified"), with the
# time of that line: "cid epoch".
: >"$WORK/done"
: >"$WORK/timeline"
# Read straight from the json-file logs on the host: asking dockerd for 20
# logs a second costs more CPU than the clients themselves.
while read -r cid pid slot ip; do
    echo "$cid $(docker inspect -f '{{.LogPath}}' "$cid")"
done <"$WORK/leechers" >"$WORK/logpaths"
poll_done() {
    local cid path line
    while read -r cid path; do
        grep -q "^$cid " "$WORK/done" && continue
        line=$(grep -m1 -F 'complete, every piece verified' "$path" || true)
        [[ -n $line ]] || continue
        line=${line##*\"time\":\"}
        echo "$cid $(date -d "${line%%\"*}" +%s.%N)" >>"$WORK/done"
    done <"$WORK/logpaths"
    [[ $(wc -l <"$WORK/done") -eq $LEECHERS ]]
}
# One sample of every client's progress, payload bytes and rates, as lines
# "seconds slot progress down-bytes up-bytes down-rate up-rate" (slot 0 is
# the seeder) in $WORK/timeline; prints a summary line.
progress_line() {
    local sum=0 n=0 p cid pid slot ip t m
    t=$(since "$T0")
    while read -r cid pid slot ip; do
        m=$(get "$pid" "$CONTROL/metrics")
        [[ $pid == "$SPID" ]] && slot=0
        awk -v t="$t" -v s="$slot" '
            /^rumor_bt_progress_ratio/ { p = $NF }
            /^rumor_bt_payload_bytes_total.*down/ { d = $NF }
            /^rumor_bt_payload_bytes_total.*up/ { u = $NF }
            /^rumor_bt_rate_bytes_per_second.*down/ { dr = $NF }
            /^rumor_bt_rate_bytes_per_second.*up/ { ur = $NF }
            END { if (p != "") print t, s, p, d, u, dr, ur }' <<<"$m" >>"$WORK/timeline"
        [[ $pid == "$SPID" ]] && continue
        p=$(awk '/^rumor_bt_progress_ratio/ { print $NF }' <<<"$m")
        [[ -n $p ]] && sum=$(awk -v s="$sum" -v p="$p" 'BEGIN { print s + p }') && n=$((n + 1))
    done < <(cat "$WORK/leechers"; echo "$SCID $SPID 0 $SIP")
    local up
    up=$(awk -v t="$t" '$1 == t && $2 == 0 { print $5 }' "$WORK/timeline")
    log "  $(since "$T0") s: mean progress $(awk -v s="$sum" -v n="$LEECHERS" 'BEGIN { printf "%.3f", s / n }') ($n answering), $(wc -l <"$WORK/done") done, seeder sent $(awk -v u="${up:-0}" -v f="$FILE_BYTES" 'BEGIN { printf "%.2f", u / f }') x the file"
}
end=$((SECONDS + TIMEOUT))
next_line=$((SECONDS + 10))
until poll_done; do
    ((SECONDS < end)) || die "$(wc -l <"$WORK/done") of $LEECHERS leechers done after $TIMEOUT s"
    [[ $(tasks leecher | wc -l) -eq $LEECHERS ]] || die "a leecher exited: $(docker service ps --no-trunc "${STACK}_leecher" --format '{{.Name}} {{.CurrentState}} {{.Error}}' | grep -v Running | head -3)"
    if ((SECONDS >= next_line)); then
        progress_line
        next_line=$((SECONDS + 10))
    fi
    sleep 1
done
T_WALL=$(since "$T0")
SEED_UP=$(metric "$SPID" "$CONTROL" 'payload_bytes_total.*direction="up"')
SEED_TX=$(tx_bytes "$SPID" "$SIP")
log "every leecher logged its completion; $T_WALL s after the seeder started"

# ---------------------------------------------------------------- checks

fails=0
: >"$WORK/rows"
while read -r cid pid slot ip; do
    done_at=$(awk -v c="$cid" '$1 == c { print $2 }' "$WORK/done")
    m=$(get "$pid" "$CONTROL/metrics")
    verified=$(awk '/^rumor_bt_pieces_total.*result="verified"/ { print $NF }' <<<"$m")
    failed=$(awk '/^rumor_bt_pieces_total.*result="failed"/ { print $NF }' <<<"$m")
    wasted=$(awk '/^rumor_bt_wasted_bytes_total/ { print $NF }' <<<"$m")
    up=$(awk '/^rumor_bt_payload_bytes_total.*direction="up"/ { print $NF }' <<<"$m")
    sha=$(sha256sum "/proc/$pid/root/data/blob" 2>/dev/null | cut -d' ' -f1)
    ok=ok
    [[ $sha == "$SHA" ]] || { ok="SHA256 MISMATCH"; fails=$((fails + 1)); }
    printf '%s %s %s %s %s %s %s %s\n' "$slot" "$ip" \
        "$(awk -v a="$T0" -v b="$done_at" 'BEGIN { printf "%.1f", b - a }')" \
        "${verified:-?}" "${failed:-?}" "${wasted:-?}" "${up:-0}" "$ok" >>"$WORK/rows"
done <"$WORK/leechers"

# The bound, in the caps' units (KiB/s), and the time in its multiples.
read -r BOUND BOUND_WHY < <(awk -v f="$FILE_BYTES" -v n="$LEECHERS" -v us="$SEED_UP_KIB" -v u="$UP_KIB" -v d="$DOWN_KIB" 'BEGIN {
    fk = f / 1024; a = fk / us; b = fk / d; c = n * fk / (us + n * u)
    m = a; w = "F/u_s"; if (b > m) { m = b; w = "F/d_min" } if (c > m) { m = c; w = "N*F/(u_s+sum u_i)" }
    printf "%.2f %s\n", m, w }')
T_ALL=$(sort -k3n "$WORK/rows" | tail -1 | awk '{ print $3 }')
T_FIRST=$(sort -k3n "$WORK/rows" | head -1 | awk '{ print $3 }')
T_MEDIAN=$(sort -k3n "$WORK/rows" | awk '{ t[NR] = $3 } END { print t[int((NR + 1) / 2)] }')
RATIO=$(awk -v t="$T_ALL" -v b="$BOUND" 'BEGIN { printf "%.2f", t / b }')

echo
echo "== one file across Docker Swarm through rumor's overlay: $LEECHERS leechers, 1 seeder, $NODES nodes =="
echo "file: $SIZE_MIB MiB; caps: seeder up $SEED_UP_KIB KiB/s; each leecher up $UP_KIB KiB/s, down $DOWN_KIB KiB/s (tbf, whole frames); TCP $TCP_CC"
echo "slot  overlay-ip     finished(s)  verified  failed  wasted(B)  uploaded(x file)  sha256"
sort -k1n "$WORK/rows" | awk -v f="$FILE_BYTES" '{ printf "%4s  %-13s  %11s  %8s  %6s  %9s  %16.2f  %s\n", $1, $2, $3, $4, $5, $6, $7 / f, $8 }'
echo "finished: first $T_FIRST s, median $T_MEDIAN s, last $T_ALL s after the seeder's container started"
echo "Kumar-Ross bound: $BOUND s ($BOUND_WHY); the swarm took ${RATIO}x the bound (target: 1.3x)"
echo "seeder upload: $(awk -v u="$SEED_UP" -v f="$FILE_BYTES" 'BEGIN { printf "%.2f", u / f }')x the file (payload, its /metrics); $(awk -v u="$SEED_TX" -v c="$capped_tx" -v f="$FILE_BYTES" 'BEGIN { printf "%.2f", (u - c) / f }')x on its interface (frames)"
echo "sha256 of every leecher's file: $((LEECHERS - fails)) of $LEECHERS match the source"

((fails == 0)) || die "$fails leechers have a file whose sha256 is not the source's"
awk '$4 == "?" || $5 != 0 { bad = 1 } END { exit bad }' "$WORK/rows" || log "warning: a leecher reports failed hash checks or no metrics"
awk -v r="$RATIO" 'BEGIN { exit !(r <= 1.3) }' || log "the swarm took ${RATIO}x the bound: over the 1.3x target"
