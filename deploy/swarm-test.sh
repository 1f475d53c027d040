#!/usr/bin/env bash
# Proves that rumor's gossip converges on a real (single-node) Docker Swarm.
#
#   deploy/swarm-test.sh [REPLICAS]          (default 20, at least 3)
#
# Builds the FROM scratch image, starts dockerd and a swarm if none is
# running, deploys deploy/rumor-stack.yml with REPLICAS replicas, writes
# records through several replicas' APIs and checks over DNS that every
# replica answers every record; then SIGKILLs a third of the containers,
# writes more through the survivors, lets Swarm restart the killed ones and
# checks that every replica (the restarted ones included) answers every
# acknowledged record. Prints the time each step took to converge and the
# gossip bytes each node sent per second (from /metrics). Whatever it
# created is removed on any exit: stack, secret, volumes, image, the swarm
# if it initialised it, dockerd if it started it.
#
# Needs root (dockerd, nsenter), docker, nsenter, curl. Every replica is
# asked over the overlay network from inside one replica's network
# namespace (nsenter), with the same static binary that is in the image:
# the image has no shell and nothing can be pulled, and the routing mesh
# needs IPVS, which not every kernel has.
#
# Environment: RUMOR_TEST_STACK (stack name, rumortest), RUMOR_TEST_WRITES
# (records written per writer per phase, 5), RUMOR_TEST_TIMEOUT (seconds
# any one wait may take, 180), RUMOR_TEST_KEEP_IMAGE=1 (keep the image),
# RUMOR_ADAPTER (tokio or smol: which runtime's binary the image carries),
# CARGO_TARGET_DIR.
set -euo pipefail

REPLICAS=${1:-20}
[[ $REPLICAS =~ ^[0-9]+$ ]] && ((REPLICAS >= 3)) || { echo "usage: $0 [REPLICAS>=3]" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case ${RUMOR_ADAPTER:-tokio} in
    tokio) BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/rumor ;;
    smol) BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/rumor-smol ;;
    *) echo "RUMOR_ADAPTER must be tokio or smol" >&2; exit 2 ;;
esac
export RUMOR_ADAPTER=${RUMOR_ADAPTER:-tokio}
STACK=${RUMOR_TEST_STACK:-rumortest}
SERVICE=${STACK}_rumor
NETWORK=${STACK}_rumor
IMAGE=rumor:swarm-test-$$
SECRET=${STACK}_cluster_key
WRITES=${RUMOR_TEST_WRITES:-5}
TIMEOUT=${RUMOR_TEST_TIMEOUT:-180}
WRITERS=4
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK=$(mktemp -d /tmp/rumor-swarm-test.XXXXXX)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
    log "FAIL: $*"
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

for tool in docker nsenter curl timeout awk; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
((EUID == 0)) || die "run as root (dockerd, nsenter)"

# ---------------------------------------------------------------- cleanup

STARTED_DOCKERD= DOCKERD_PID= CREATED_SWARM= HAD_GWBRIDGE= CREATED_SECRET= CREATED_STACK= CREATED_IMAGE=

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

volumes() { docker volume ls -q --filter "name=${SERVICE}-data-" 2>/dev/null; }
remove_volumes() {
    local v
    for v in $(volumes); do docker volume rm "$v" >/dev/null 2>&1; done
    [[ -z $(volumes) ]]
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    log "cleaning up"
    if [[ -n $CREATED_STACK ]]; then
        docker stack rm "$STACK" >/dev/null
        wait_for 90 stack_gone || log "warning: the stack's containers or network are still there"
    fi
    if [[ -n $CREATED_STACK ]]; then
        # A volume stays busy for a moment after its container is gone.
        wait_for 30 remove_volumes || log "warning: cannot remove volumes: $(volumes | paste -sd' ')"
    fi
    [[ -n $CREATED_SECRET ]] && docker secret rm "$SECRET" >/dev/null
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
docker stack ls --format '{{.Name}}' | grep -qx "$STACK" && die "a stack $STACK exists already; remove it or set RUMOR_TEST_STACK"

# ------------------------------------------------------------- the image

t=$(now)
"$HERE/build-image.sh" "$IMAGE"
CREATED_IMAGE=1
log "image $IMAGE built in $(since "$t") s: $(file -b "$BIN" | cut -d, -f1-2,5 | tr -s ' ')"

# ----------------------------------------------------------------- deploy

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | docker secret create "$SECRET" - >/dev/null
CREATED_SECRET=1
log "deploying $REPLICAS replicas"
t_deploy=$(now)
CREATED_STACK=1
out=$(RUMOR_IMAGE=$IMAGE RUMOR_REPLICAS=$REPLICAS RUMOR_KEY_SECRET=$SECRET RUMOR_API_TOKEN=$TOKEN \
    RUMOR_DNS_PORT=${RUMOR_TEST_DNS_PORT:-25353} RUMOR_API_PORT=${RUMOR_TEST_API_PORT:-26969} \
    timeout 120 docker stack deploy -c "$HERE/rumor-stack.yml" "$STACK" 2>&1) ||
    die "docker stack deploy failed: $out"

# Running replicas, one a line: container-id pid slot overlay-ip.
replicas() {
    local ids
    ids=$(docker ps -q --filter "label=com.docker.swarm.service.name=$SERVICE" --filter status=running)
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086
    docker inspect -f "{{.Id}} {{.State.Pid}} {{index .Config.Labels \"com.docker.swarm.task.name\"}} {{with index .NetworkSettings.Networks \"$NETWORK\"}}{{.IPAddress}}{{end}}" $ids 2>/dev/null |
        awk '$2 > 0 && $4 != "" { split($3, t, "."); print substr($1, 1, 12), $2, t[2], $4 }' | sort -k3n
}

# The node's /metrics, through its own loopback.
metrics() { nsenter -t "$1" -n curl -s -m 3 "http://127.0.0.1:6969/metrics" </dev/null 2>/dev/null; }

# Every one of the REPLICAS replicas runs and sees all the others alive.
cluster_formed() {
    replicas >"$WORK/reps"
    [[ $(wc -l <"$WORK/reps") -eq $REPLICAS ]] || return 1
    local cid pid slot ip alive
    while read -r cid pid slot ip; do
        alive=$(metrics "$pid" | awk '/^rumor_members\{state="alive"\}/ { print $2 }')
        [[ ${alive:-0} -ge $((REPLICAS - 1)) ]] || return 1
    done <"$WORK/reps"
}

# Gossip bytes sent so far by each running replica: "cid bytes".
sample_bytes() {
    local cid pid slot ip
    replicas | while read -r cid pid slot ip; do
        echo "$cid $(metrics "$pid" | awk '/^rumor_gossip_bytes_total\{direction="out"\}/ { print $2 }')"
    done
}
# Bytes per node per second between two samples, over the replicas in both.
byte_rate() { # file1 t1 file2 t2
    awk -v dt="$(awk -v a="$2" -v b="$4" 'BEGIN { print b - a }')" '
        NR == FNR { if ($2 != "") a[$1] = $2; next }
        ($1 in a) && $2 != "" { sum += $2 - a[$1]; n++ }
        END { if (n && dt > 0) printf "%.0f B/node/s (%d nodes, %.1f s)", sum / n / dt, n, dt; else print "n/a" }
    ' "$1" "$3"
}
RATES=()
measure() { # label file1 t1 file2 t2
    local r
    r=$(byte_rate "$2" "$3" "$4" "$5")
    RATES+=("$1: $r")
    log "gossip out, $1: $r"
}

wait_for "$TIMEOUT" cluster_formed || die "the cluster did not form in $TIMEOUT s: $(wc -l <"$WORK/reps") replicas running"
T_FORM=$(since "$t_deploy")
log "all $REPLICAS replicas running, each seeing the other $((REPLICAS - 1)) alive, $T_FORM s after deploy"
awk '{ printf "%s=%s ", $3, $4 } END { print "" }' "$WORK/reps" | fold -s -w 96 | sed 's/^/  slot=overlay ip: /'

# Idle gossip: nothing written, only membership and anti-entropy.
sample_bytes >"$WORK/b0"
t_b0=$(now)
sleep 10
sample_bytes >"$WORK/b1"
t_b1=$(now)
measure "idle, $REPLICAS nodes" "$WORK/b0" "$t_b0" "$WORK/b1" "$t_b1"

# ------------------------------------------------------- writes and checks

: >"$WORK/expected" # "name ip" of every acknowledged write
: >"$WORK/unacked"

# Writes WRITES records through one replica's API (docker exec of the
# static binary: the API address and token come from the container's
# environment). Prints nothing; records what was acknowledged.
write_through() { # phase cid slot
    local phase=$1 cid=$2 slot=$3 k name ip out
    for ((k = 1; k <= WRITES; k++)); do
        name=p$phase-s$slot-$k.swarm.test
        ip=10.$phase.$slot.$k
        if out=$(timeout 20 docker exec "$cid" /rumor dns add "$name" "$ip" --ttl 86400 </dev/null 2>&1) &&
            [[ $out == *'"ok":true'* ]]; then
            echo "$name $ip" >>"$WORK/expected"
        else
            echo "$name $ip $out" >>"$WORK/unacked"
        fi
    done
}

# One pass: asks every running replica for every expected name over DNS
# (UDP, across the overlay network, from inside a replica's namespace). A
# (container, name) once right is not asked again by later passes; a
# restarted replica is a new container and is asked everything.
check_pass() {
    replicas >"$WORK/reps"
    local n
    n=$(wc -l <"$WORK/reps")
    local vantage
    vantage=$(awk 'NR == 1 { print $2 }' "$WORK/reps")
    local cid pid slot ip jobs=()
    while read -r cid pid slot ip; do
        (
            ok=$WORK/ok.$cid
            touch "$ok"
            while read -r name want; do
                grep -qxF "$name" "$ok" && continue
                out=$(nsenter -t "$vantage" -n timeout 4 "$BIN" dns query "$name" A --server "$ip:8053" </dev/null 2>&1) || continue
                [[ $out == *NOERROR* && $out == *$'\tA\t'"$want"* ]] && echo "$name" >>"$ok"
            done <"$WORK/expected"
        ) &
        jobs+=($!)
    done <"$WORK/reps"
    # Only these: a bare wait would also wait for a dockerd started here.
    ((${#jobs[@]} == 0)) || wait "${jobs[@]}"
    local total missing=0
    total=$(wc -l <"$WORK/expected")
    : >"$WORK/missing"
    while read -r cid pid slot ip; do
        local have
        have=$(sort -u "$WORK/ok.$cid" | wc -l)
        if ((have < total)); then
            missing=$((missing + total - have))
            echo "slot $slot ($ip): $have/$total" >>"$WORK/missing"
        fi
    done <"$WORK/reps"
    ((n == REPLICAS && missing == 0))
}

# Every one of the REPLICAS replicas answers the last acknowledged record:
# one query each, so it can be polled finely.
last_everywhere() {
    replicas >"$WORK/reps.last"
    [[ $(wc -l <"$WORK/reps.last") -eq $REPLICAS ]] || return 1
    local name want vantage cid pid slot ip jobs=() j bad=0
    read -r name want < <(tail -1 "$WORK/expected")
    vantage=$(awk 'NR == 1 { print $2 }' "$WORK/reps.last")
    while read -r cid pid slot ip; do
        (
            out=$(nsenter -t "$vantage" -n timeout 4 "$BIN" dns query "$name" A --server "$ip:8053" </dev/null 2>&1) &&
                [[ $out == *$'\tA\t'"$want"* ]]
        ) &
        jobs+=($!)
    done <"$WORK/reps.last"
    for j in "${jobs[@]}"; do wait "$j" || bad=1; done
    ((bad == 0))
}

converge() { # label t-from
    local end=$((SECONDS + TIMEOUT)) passes=0
    if wait_for "$TIMEOUT" last_everywhere; then
        LAST_IN=$(since "$2")
        log "$1: the last acknowledged write is answered by all $REPLICAS replicas $LAST_IN s after its ack"
    else
        LAST_IN=n/a
    fi
    until check_pass; do
        passes=$((passes + 1))
        if ((SECONDS >= end)); then
            log "not converged after $TIMEOUT s; $(wc -l <"$WORK/reps")/$REPLICAS replicas running; behind:"
            head -20 "$WORK/missing" | sed 's/^/  /'
            return 1
        fi
        sleep 0.2
    done
    CONVERGED_IN=$(since "$2")
    log "$1: all $REPLICAS replicas answer all $(wc -l <"$WORK/expected") records over DNS, $CONVERGED_IN s after the last acknowledged write ($((passes + 1)) passes)"
}

# Writer slots spread over the replicas; in phase 2 only survivors write.
pick_writers() { # file-of-replicas -> "cid slot" lines
    awk -v w="$WRITERS" '{ line[NR] = $1 " " $3 } END { for (i = 0; i < w; i++) print line[1 + int(i * NR / w)] }' "$1" | sort -u
}

# Phase 1: writes through several replicas, all of them up.
replicas >"$WORK/reps"
pick_writers "$WORK/reps" >"$WORK/writers1"
sample_bytes >"$WORK/b2"
t_b2=$(now)
while read -r cid slot; do write_through 1 "$cid" "$slot"; done <"$WORK/writers1"
t_ack1=$(now)
acked1=$(wc -l <"$WORK/expected")
log "phase 1: $acked1 writes acknowledged through the APIs of slots $(awk '{print $2}' "$WORK/writers1" | paste -sd,), $(wc -l <"$WORK/unacked") refused"
((acked1 > 0)) || die "no write was acknowledged: $(head -3 "$WORK/unacked")"
converge "phase 1" "$t_ack1" || die "phase 1 did not converge"
T_P1=$CONVERGED_IN T_P1_LAST=$LAST_IN
sample_bytes >"$WORK/b3"
t_b3=$(now)
measure "phase 1 (writes until converged)" "$WORK/b2" "$t_b2" "$WORK/b3" "$t_b3"

# The same answer through `docker exec` of the binary in a scratch container.
read -r cid _ slot _ < <(tail -1 "$WORK/reps")
read -r name want < <(head -1 "$WORK/expected")
out=$(timeout 20 docker exec "$cid" /rumor dns query "$name" A --server 127.0.0.1:8053 2>&1) || true
[[ $out == *$'\tA\t'"$want"* ]] || die "docker exec check on slot $slot: $out"
log "docker exec /rumor dns query $name on slot $slot: $(grep -F "$want" <<<"$out" | tr '\t' ' ')"

# Phase 2: SIGKILL a third of the containers, write through survivors while
# they are down, let Swarm restart them, check everyone.
replicas >"$WORK/reps"
awk '$3 % 3 == 0' "$WORK/reps" >"$WORK/victims"
awk '$3 % 3 != 0' "$WORK/reps" >"$WORK/survivors"
VICTIMS=$(wc -l <"$WORK/victims")
pick_writers "$WORK/survivors" >"$WORK/writers2"
sample_bytes >"$WORK/b4"
t_b4=$(now)
t_kill=$(now)
# shellcheck disable=SC2046
timeout 60 docker kill --signal KILL $(awk '{print $1}' "$WORK/victims") >/dev/null
log "phase 2: killed $VICTIMS of $REPLICAS containers (SIGKILL), slots $(awk '{print $3}' "$WORK/victims" | paste -sd,)"
while read -r cid slot; do write_through 2 "$cid" "$slot"; done <"$WORK/writers2"
t_ack2=$(now)
running_now=$(replicas | wc -l)
acked2=$(($(wc -l <"$WORK/expected") - acked1))
log "phase 2: $acked2 writes acknowledged through slots $(awk '{print $2}' "$WORK/writers2" | paste -sd,) while $((REPLICAS - running_now)) replicas were down, $(wc -l <"$WORK/unacked") refused in all"

restarted() {
    replicas >"$WORK/reps"
    [[ $(wc -l <"$WORK/reps") -eq $REPLICAS ]] || return 1
    ! grep -qFf <(awk '{print $1}' "$WORK/victims") "$WORK/reps"
}
wait_for "$TIMEOUT" restarted || die "Swarm did not restart the killed replicas in $TIMEOUT s"
T_RESTART=$(since "$t_kill")
t_back=$(now)
log "phase 2: Swarm restarted them; all $REPLICAS running again $T_RESTART s after the kill"
converge "phase 2" "$t_ack2" || die "phase 2 did not converge"
T_P2=$CONVERGED_IN T_P2_LAST=$LAST_IN
T_P2_BACK=$(since "$t_back")
sample_bytes >"$WORK/b5"
t_b5=$(now)
measure "phase 2 (kill, writes, restarts until converged; survivors)" "$WORK/b4" "$t_b4" "$WORK/b5" "$t_b5"

# The restarted replicas found their data in their slots' volumes.
loaded=$(grep -vFf <(awk '{print $1}' "$WORK/survivors") "$WORK/reps" | while read -r cid _ slot _; do
    docker logs "$cid" </dev/null 2>&1 | grep -o 'data loaded entries=[0-9]*' | head -1 | sed "s/^/slot $slot: /"
done | paste -sd';')
log "restarted replicas on their volumes: $loaded"

# A last full pass from scratch: no acknowledged write is missing anywhere.
rm -f "$WORK"/ok.*
check_pass || {
    head -20 "$WORK/missing"
    die "final pass: an acknowledged write is missing"
}
log "final pass: all $REPLICAS replicas answer all $(wc -l <"$WORK/expected") acknowledged records over DNS"
wait_for 60 cluster_formed && log "membership: every replica sees the other $((REPLICAS - 1)) alive" ||
    log "membership: not every replica sees all the others alive yet (see /members)"

sample_bytes >"$WORK/b6"
t_b6=$(now)
sleep 10
sample_bytes >"$WORK/b7"
t_b7=$(now)
measure "idle after the restarts" "$WORK/b6" "$t_b6" "$WORK/b7" "$t_b7"

echo
echo "== rumor on Docker Swarm: $REPLICAS replicas =="
echo "cluster formed (all running, all alive): $T_FORM s after deploy"
echo "phase 1, $acked1 writes via $(wc -l <"$WORK/writers1") replicas: last write on every replica ${T_P1_LAST} s after its ack;"
echo "    every record on every replica (verified) ${T_P1} s after the last ack"
echo "phase 2, $VICTIMS killed, $acked2 writes meanwhile: Swarm restarted them in $T_RESTART s;"
echo "    last write on every replica ${T_P2_LAST} s after its ack; every record on every replica (verified)"
echo "    ${T_P2} s after the last ack, ${T_P2_BACK} s after all were back"
echo "acknowledged writes lost: 0 of $(wc -l <"$WORK/expected")"
for r in "${RATES[@]}"; do echo "gossip out, $r"; done
