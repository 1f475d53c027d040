#!/usr/bin/env bash
# The interop matrix: rumor against the BitTorrent clients people run, both
# ways, on loopback.
#
#   bash bench/interop.sh                        # the whole matrix
#   CLIENTS="aria2 transmission" MODES=torrent TRACKERS=node bash bench/interop.sh
#   ENC=1 bash bench/interop.sh                  # the other client requires encryption
#
# For each client (aria2, transmission, qbittorrent, libtorrent, rumor) and
# each direction ("X<-rumor": X downloads from `rumor seed`; "rumor<-X":
# `rumor get` downloads from X seeding), by .torrent and by magnet link,
# through rumor's node tracker (`rumor node` serves /announce) and through
# opentracker, a SIZE_MIB multi-file torrent (an empty file, a nested
# folder, a name with spaces and UTF-8) is transferred and compared byte for
# byte. Each cell prints pass/fail, MiB/s (payload over the time from the
# first byte received to the end), the time to the first byte
# (from the moment both sides run) and the total time (until the client
# says it is complete). With BASELINE=1 (the default) each client
# also downloads from a libtorrent seeder in the same run ("X<-libtorrent"),
# the figure rumor's seeding is compared with.
#
# Peers meet only through the tracker: the side started second learns the
# first from its `started` announce, so no cell waits for a re-announce
# (transmission 3.00 does not dial 127.0.0.1 peers a tracker hands out, so
# the seeder is the side that dials it).
#
# Environment: RUMOR (binary; default target/release/rumor), CLIENTS,
# DIRECTIONS ("from-rumor to-rumor"), MODES ("torrent magnet"), TRACKERS
# ("node opentracker"), ENC (0|1), RUMOR_ENC (rumor's --encryption; by
# default require with ENC=1, else prefer), SIZE_MIB (64), CELL_TIMEOUT (s, 90),
# BASELINE (1|0), KEEP (1: keep the scratch directory), OUT (a file the
# result lines are appended to as well).
# Needs: aria2 transmission-cli transmission-daemon qbittorrent-nox
# python3-libtorrent opentracker curl (see .ci/apt-packages).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUMOR=${RUMOR:-$ROOT/target/release/rumor}
CLIENTS=${CLIENTS:-"aria2 transmission qbittorrent libtorrent rumor"}
DIRECTIONS=${DIRECTIONS:-"from-rumor to-rumor"}
MODES=${MODES:-"torrent magnet"}
TRACKERS=${TRACKERS:-"node opentracker"}
ENC=${ENC:-0}
SIZE_MIB=${SIZE_MIB:-64}
CELL_TIMEOUT=${CELL_TIMEOUT:-90}
BASELINE=${BASELINE:-1}
PY=/usr/bin/python3

[ -x "$RUMOR" ] || { echo "no rumor binary at $RUMOR (cargo build --release -p rumor-tokio)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/rumor-interop.XXXXXX)
PIDS=()
cleanup_cell() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
    done
    PIDS=()
}
cleanup_all() {
    cleanup_cell
    [ "${KEEP:-0}" = 1 ] && echo "scratch kept in $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup_all EXIT
trap 'exit 130' INT TERM

# Free ports from a per-run base below the ephemeral range, skipping any in
# use; the counter lives in a file, as `$(port)` runs in a subshell.
echo $((20000 + RANDOM % 8000)) >"$WORK/port"
port() {
    local p n=${1:-1}
    p=$(cat "$WORK/port")
    while ss -Hta "sport >= :$p and sport < :$((p + n))" | grep -q . ||
        ss -Hua "sport >= :$p and sport < :$((p + n))" | grep -q .; do p=$((p + n)); done
    echo $((p + n)) >"$WORK/port"
    echo "$p"
}
now() { date +%s.%N; }
# Waits up to $1 seconds for the command in the remaining arguments to succeed.
wait_for() {
    local end
    end=$(echo "$(now) + $1" | bc)
    shift
    while ! "$@" >/dev/null 2>&1; do
        [ "$(echo "$(now) > $end" | bc)" = 1 ] && return 1
        sleep 0.05
    done
}
listening() { ss -Hltn "sport = :$1" | grep -q .; }

# ---- the content ----
SRC=$WORK/src
NAME="interop payload"
make_content() {
    local d="$SRC/$NAME"
    mkdir -p "$d/nested/folder"
    : >"$d/empty"
    local big=$((SIZE_MIB * 1024 * 1024 - 3 * 1000003))
    head -c "$big" /dev/urandom >"$d/nested/folder/big part.bin"
    head -c 1000003 /dev/urandom >"$d/spaces and ünïcødé 名前.bin"
    head -c 2000006 /dev/urandom >"$d/nested/mid.dat"
}

# ---- trackers ----
# start_tracker KIND: sets ANNOUNCE and starts what serves it.
start_tracker() {
    case $1 in
    node)
        local api dns gossip
        api=$(port) dns=$(port) gossip=$(port)
        "$RUMOR" node --api 127.0.0.1:"$api" --dns 127.0.0.1:"$dns" --gossip 127.0.0.1:"$gossip" \
            --insecure-dev-cluster --ephemeral --data "$CELL/node" --tracker-interval 120 \
            >"$CELL/node.log" 2>&1 &
        PIDS+=($!)
        ANNOUNCE="http://127.0.0.1:$api/announce"
        wait_for 10 listening "$api"
        ;;
    opentracker)
        local p
        p=$(port)
        mkdir -p "$CELL/ot"
        echo "$IH" >"$CELL/ot/whitelist"
        chmod 755 "$CELL/ot"
        chmod 644 "$CELL/ot/whitelist"
        # Debian's build chroots into -d when run as root.
        local wl="$CELL/ot/whitelist"
        [ "$(id -u)" = 0 ] && wl=/whitelist
        (cd "$CELL/ot" && exec opentracker -i 127.0.0.1 -p "$p" -P "$p" -d "$CELL/ot" -w "$wl") \
            >"$CELL/opentracker.log" 2>&1 &
        PIDS+=($!)
        ANNOUNCE="http://127.0.0.1:$p/announce"
        wait_for 10 listening "$p"
        ;;
    esac
}

# The .torrent for this cell's tracker (the infohash does not change: the
# tracker is outside the info dictionary) and its magnet link.
make_torrent() {
    "$PY" - "$BASE_TORRENT" "$CELL/t.torrent" "$ANNOUNCE" <<'EOF'
import sys
def dec(b, i=0):
    c = b[i:i+1]
    if c == b"i":
        j = b.index(b"e", i); return int(b[i+1:j]), j + 1
    if c in (b"l", b"d"):
        out, i = ([] if c == b"l" else {}), i + 1
        while b[i:i+1] != b"e":
            if isinstance(out, list):
                v, i = dec(b, i); out.append(v)
            else:
                k, i = dec(b, i); v, i = dec(b, i); out[k] = v
        return out, i + 1
    j = b.index(b":", i); n = int(b[i:j]); return b[j+1:j+1+n], j + 1 + n
def enc(v):
    if isinstance(v, int): return b"i%de" % v
    if isinstance(v, bytes): return b"%d:%s" % (len(v), v)
    if isinstance(v, list): return b"l" + b"".join(enc(x) for x in v) + b"e"
    return b"d" + b"".join(enc(k) + enc(v[k]) for k in sorted(v)) + b"e"
t, _ = dec(open(sys.argv[1], "rb").read())
t[b"announce"] = sys.argv[3].encode()
t.pop(b"announce-list", None)
open(sys.argv[2], "wb").write(enc(t))
EOF
    TORRENT=$CELL/t.torrent
    local tr
    tr=$("$PY" -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$ANNOUNCE")
    MAGNET="magnet:?xt=urn:btih:$IH&dn=interop&tr=$tr"
}

# ---- clients ----
# seed_X DIR_WITH_DATA and leech_X OUT_DIR start client X in the background
# (PIDS gets its pid); done_X OUT_DIR succeeds once X has every piece.
# WHAT is the .torrent or the magnet link for a leecher.

ARIA_COMMON=(--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false
    --interface=127.0.0.1 --bt-external-ip=127.0.0.1 --follow-torrent=false --file-allocation=none
    --console-log-level=warn --summary-interval=0 --bt-stop-timeout=0 --check-certificate=false)
aria_enc() { [ "$ENC" = 1 ] && echo "--bt-require-crypto=true --bt-min-crypto-level=arc4"; }
seed_aria2() {
    local p
    p=$(port)
    # shellcheck disable=SC2046
    aria2c "${ARIA_COMMON[@]}" $(aria_enc) -V --seed-ratio=0 --seed-time=60 --listen-port="$p" \
        -d "$1" "$TORRENT" >"$CELL/aria2.log" 2>&1 &
    PIDS+=($!)
    wait_for 20 listening "$p"
}
leech_aria2() {
    mkdir -p "$1"
    # shellcheck disable=SC2046
    # A range: with a magnet link aria2 binds once for the metadata and
    # again for the download.
    local p
    p=$(port 8)
    aria2c "${ARIA_COMMON[@]}" $(aria_enc) --seed-time=0 --listen-port="$p-$((p + 7))" -d "$1" "$WHAT" \
        >"$CELL/aria2.log" 2>&1 &
    PIDS+=($!)
    ARIA_PID=$!
}
done_aria2() { ! kill -0 "$ARIA_PID" 2>/dev/null && wait "$ARIA_PID"; }

tr_start() {
    TR_RPC=$(port)
    TR_PEER=$(port)
    local enc=--encryption-preferred
    [ "$ENC" = 1 ] && enc=--encryption-required
    mkdir -p "$CELL/tr-conf" "$1"
    transmission-daemon -f -g "$CELL/tr-conf" -w "$1" -p "$TR_RPC" -P "$TR_PEER" --no-dht --no-lpd \
        --no-portmap -i 127.0.0.1 -r 127.0.0.1 -a 127.0.0.1 -T $enc >"$CELL/transmission.log" 2>&1 &
    PIDS+=($!)
    wait_for 10 listening "$TR_RPC"
}
seed_transmission() {
    tr_start "$1"
    transmission-remote "$TR_RPC" -a "$TORRENT" >>"$CELL/transmission.log" 2>&1
    # Wait for its check of the data: seeding only once it is verified.
    wait_for 60 done_transmission
}
leech_transmission() {
    tr_start "$1"
    transmission-remote "$TR_RPC" -a "$WHAT" >>"$CELL/transmission.log" 2>&1
}
done_transmission() { transmission-remote "$TR_RPC" -t 1 -i 2>/dev/null | grep -q 'Percent Done: 100%'; }
announced_transmission() { transmission-remote "$TR_RPC" -t 1 -it 2>/dev/null | grep -q 'Got a list of'; }

qb_start() {
    QB_WEB=$(port)
    local qport enc=0
    qport=$(port)
    [ "$ENC" = 1 ] && enc=1
    mkdir -p "$CELL/qb/qBittorrent/config" "$1"
    # MultiConnectionsPerIp: every peer here is 127.0.0.1, and by default
    # libtorrent (under qBittorrent) keeps one peer entry per IP; once
    # opentracker hands qBittorrent its own address and it bans that
    # self-connection, it refuses every loopback peer. Real peers have
    # addresses of their own.
    cat >"$CELL/qb/qBittorrent/config/qBittorrent.conf" <<EOF
[LegalNotice]
Accepted=true
[BitTorrent]
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\PeXEnabled=false
Session\\Port=$qport
Session\\DefaultSavePath=$1
Session\\Encryption=$enc
Session\\AnonymousModeEnabled=false
Session\\MultiConnectionsPerIp=true
[Preferences]
WebUI\\Address=127.0.0.1
WebUI\\Port=$QB_WEB
WebUI\\LocalHostAuth=false
WebUI\\CSRFProtection=false
WebUI\\HostHeaderValidation=false
Connection\\UPnP=false
EOF
    qbittorrent-nox --profile="$CELL/qb" >"$CELL/qbittorrent.log" 2>&1 &
    PIDS+=($!)
    wait_for 20 curl -sf "http://127.0.0.1:$QB_WEB/api/v2/app/version"
}
seed_qbittorrent() {
    qb_start "$1"
    curl -sf -F "torrents=@$TORRENT" -F "savepath=$1" "http://127.0.0.1:$QB_WEB/api/v2/torrents/add" \
        >>"$CELL/qbittorrent.log" 2>&1
    wait_for 60 done_qbittorrent
}
leech_qbittorrent() {
    qb_start "$1"
    if [ "${WHAT#magnet:}" != "$WHAT" ]; then
        curl -sf --data-urlencode "urls=$WHAT" -d "savepath=$1" "http://127.0.0.1:$QB_WEB/api/v2/torrents/add"
    else
        curl -sf -F "torrents=@$WHAT" -F "savepath=$1" "http://127.0.0.1:$QB_WEB/api/v2/torrents/add"
    fi >>"$CELL/qbittorrent.log" 2>&1
}
announced_qbittorrent() {
    curl -sf "http://127.0.0.1:$QB_WEB/api/v2/torrents/trackers?hash=$IH" |
        "$PY" -c 'import json,sys; sys.exit(0 if any(t["tier"] >= 0 and (t["status"] == 2 or t["num_leeches"] > 0 or t["num_seeds"] > 0) for t in json.load(sys.stdin)) else 1)'
}
done_qbittorrent() {
    curl -sf "http://127.0.0.1:$QB_WEB/api/v2/torrents/info" |
        "$PY" -c 'import json,sys; t=json.load(sys.stdin); sys.exit(0 if t and t[0]["progress"]>=1 and t[0]["state"] not in ("checkingUP","checkingDL","checkingResumeData","metaDL") else 1)'
}

LT_PY='
import sys, time, libtorrent as lt
mode, what, save, port, enc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
# enc_policy 0 forced, 1 enabled; enc_level 1 plaintext, 2 RC4, 3 both.
pol, lvl = (0, 2) if enc else (1, 3)
s = lt.session({"listen_interfaces": "127.0.0.1:%d" % port, "enable_dht": False, "enable_lsd": False,
    "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True, "out_enc_policy": pol, "in_enc_policy": pol,
    "allowed_enc_level": lvl, "announce_to_all_tiers": True,
    "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.tracker_notification})
p = lt.parse_magnet_uri(what) if what.startswith("magnet:") else lt.add_torrent_params()
if not what.startswith("magnet:"):
    p.ti = lt.torrent_info(what)
p.save_path = save
h = s.add_torrent(p)
seen = set()
while True:
    # Each connection once: which side dialed and what it is encrypted
    # with (the other client picks RC4 or plain text from what is offered).
    for pi in h.get_peer_info():
        key = (pi.ip, pi.flags & lt.peer_info.local_connection)
        if key not in seen and pi.flags & lt.peer_info.handshake == 0:
            seen.add(key)
            print("peer %s:%d %s %s" % (pi.ip[0], pi.ip[1], "dialed" if pi.flags & lt.peer_info.local_connection else "dialed us",
                "rc4" if pi.flags & lt.peer_info.rc4_encrypted else "plaintext-in-mse" if pi.flags & lt.peer_info.plaintext_encrypted else "plain"), flush=True)
    for a in s.pop_alerts():
        if isinstance(a, lt.tracker_reply_alert):
            open(save + "/.announced", "w").close()
        if a.category() & lt.alert.category_t.error_notification:
            print("alert:", a.message(), flush=True)
    st = h.status()
    if mode == "leech" and st.is_seeding:
        print("DONE", flush=True)
        open(save + "/.done", "w").close()
    if mode == "seed" and st.is_seeding and not getattr(h, "_said", False):
        print("SEEDING", flush=True)
        open(save + "/.seeding", "w").close()
        h._said = True
    time.sleep(0.05)
'
seed_libtorrent() {
    # Ports are taken before `&`: a background command expands its
    # arguments in the child, racing the next port() of this shell.
    local p
    p=$(port)
    "$PY" -c "$LT_PY" seed "$TORRENT" "$1" "$p" "$ENC" >"$CELL/libtorrent.log" 2>&1 &
    PIDS+=($!)
    wait_for 60 test -e "$1/.seeding"
    rm -f "$1/.seeding"
}
leech_libtorrent() {
    mkdir -p "$1"
    local p
    p=$(port)
    "$PY" -c "$LT_PY" leech "$WHAT" "$1" "$p" "$ENC" >"$CELL/libtorrent.log" 2>&1 &
    PIDS+=($!)
}
done_libtorrent() { test -e "$1/.done"; }
announced_libtorrent() { test -e "$1/.announced"; }
# aria2 dials the peers its tracker gives, and rumor dials too: nothing to wait for.
announced_aria2() { true; }
announced_rumor() { true; }

# RUMOR_ENC (prefer|require|off) sets rumor's own policy; by default it is
# `require` with ENC=1 and rumor's default (prefer) otherwise.
rumor_enc() {
    if [ -n "${RUMOR_ENC:-}" ]; then
        echo "--encryption $RUMOR_ENC"
    elif [ "$ENC" = 1 ]; then
        echo "--encryption require"
    fi
}
seed_rumor() {
    # shellcheck disable=SC2046
    local p c
    p=$(port)
    c=$(port)
    # shellcheck disable=SC2046
    "$RUMOR" seed "$TORRENT" "$1" --quiet --bind 127.0.0.1 --port "$p" --control 127.0.0.1:"$c" \
        $(rumor_enc) >"$CELL/rumor-seed.log" 2>&1 &
    PIDS+=($!)
}
leech_rumor() {
    mkdir -p "$1"
    # shellcheck disable=SC2046
    local p
    p=$(port)
    # shellcheck disable=SC2046
    "$RUMOR" get "$WHAT" -o "$1" --no-seed --quiet --bind 127.0.0.1 --port "$p" $(rumor_enc) \
        >"$CELL/rumor-get.log" 2>&1 &
    PIDS+=($!)
    RUMOR_GET_PID=$!
}
done_rumor() { ! kill -0 "$RUMOR_GET_PID" 2>/dev/null && wait "$RUMOR_GET_PID"; }

# Bytes actually written under a directory (sparse files count nothing
# until data lands; clients' own state files are excluded by name).
written() {
    find "$1" -type f ! -name '.*' ! -name '*.aria2' ! -name '*.part' -printf '%b\n' 2>/dev/null |
        awk '{s += $1} END {print s * 512 + 0}'
}

# Every file of the source is in the download with the same bytes, and
# nothing else is; an empty file may be missing (transmission 3.00 does not
# create empty files), which is noted.
same_tree() {
    "$PY" - "$1" "$2" <<'EOF'
import os, sys, filecmp
src, dst = sys.argv[1], sys.argv[2]
def files(root):
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if not f.startswith("."):
                p = os.path.join(d, f); out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out
a, b = files(src), files(dst) if os.path.isdir(dst) else {}
bad = [f for f in b if f not in a] + [f for f, n in a.items() if f not in b and n > 0]
bad += [f for f, n in a.items() if f in b and not filecmp.cmp(os.path.join(src, f), os.path.join(dst, f), shallow=False)]
if bad:
    print("differs: " + ", ".join(sorted(bad))); sys.exit(1)
missing = [f for f in a if f not in b]
if missing:
    print("(empty file not created: %s)" % ", ".join(missing))
EOF
}

# got_X OUT_DIR: payload bytes X has received so far (its own count where
# it keeps data in a cache before writing it).
got_aria2() { written "$1"; }
got_libtorrent() { written "$1"; }
got_rumor() { written "$1"; }
# (its API's count lags by a second or so: whichever says more)
got_qbittorrent() {
    local w
    w=$(written "$1")
    curl -sf "http://127.0.0.1:$QB_WEB/api/v2/torrents/info" |
        "$PY" -c 'import json,sys; t=json.load(sys.stdin); print(max(int(sys.argv[1]), t[0]["downloaded"] if t else 0))' "$w" 2>/dev/null || echo "$w"
}
got_transmission() {
    transmission-remote "$TR_RPC" -t 1 -i 2>/dev/null | awk '/^  Downloaded:/ {print ($2 == "None") ? 0 : 1; f=1} END {if (!f) print 0}'
}

# ---- one cell ----
# cell SEEDER LEECHER MODE TRACKER
FAILS=0
cell() {
    local seeder=$1 leecher=$2 mode=$3 tracker=$4
    CELL=$WORK/cell-$seeder-$leecher-$mode-$tracker
    mkdir -p "$CELL"
    if ! start_tracker "$tracker"; then
        cleanup_cell
        report "$@" fail "the tracker did not start"
        FAILS=$((FAILS + 1))
        return
    fi
    make_torrent
    WHAT=$TORRENT
    [ "$mode" = magnet ] && WHAT=$MAGNET
    local seed_dir=$CELL/seed out=$CELL/out
    mkdir -p "$seed_dir"
    cp -al "$SRC/$NAME" "$seed_dir/" 2>/dev/null || cp -a "$SRC/$NAME" "$seed_dir/"
    local t0 first="" full="" t_done="" why=""
    # rumor always starts second and dials (see the top).
    # The first side must have announced before the second starts, or the
    # second learns nothing until a re-announce. The side that dials starts
    # second: rumor, or the seeder when the leecher is transmission.
    if [ "$seeder" = rumor ] || { [ "$leecher" = transmission ] && [ "$seeder" != transmission ]; }; then
        "leech_$leecher" "$out"
        wait_for 20 "announced_$leecher" "$out" || why="$leecher did not announce"
        t0=$(now)
        "seed_$seeder" "$seed_dir"
    else
        "seed_$seeder" "$seed_dir" || why="the seeder did not verify its data"
        wait_for 20 "announced_$seeder" "$seed_dir" || why="$seeder did not announce"
        t0=$(now)
        "leech_$leecher" "$out"
    fi
    local end
    end=$(echo "$t0 + $CELL_TIMEOUT" | bc)
    while [ -z "$why" ]; do
        if [ -z "$first" ] && [ "$("got_$leecher" "$out")" -gt 0 ]; then first=$(now); fi
        # qBittorrent's API says "complete" a second or so late: for it the
        # transfer ends when every byte is on disk. (Not for the others:
        # aria2 allocates blocks ahead of the data, and their own signal,
        # an exit or a file, is prompt.)
        if [ "$leecher" = qbittorrent ] && [ -z "$full" ] && [ "$(written "$out")" -ge "$SIZE_BYTES" ]; then
            full=$(now)
        fi
        if "done_$leecher" "$out"; then
            t_done=$(now)
            break
        fi
        if [ "$(echo "$(now) > $end" | bc)" = 1 ]; then
            why="timed out after ${CELL_TIMEOUT}s at $(($(written "$out") / 1048576)) MiB"
            break
        fi
        sleep 0.05
    done
    [ -z "$first" ] && first=${t_done:-$t0}
    [ -z "$full" ] && full=${t_done:-$t0}
    [ -n "$t_done" ] && [ "$(echo "$full > $t_done" | bc)" = 1 ] && full=$t_done
    if [ -z "$why" ]; then
        # A client may report done a moment before its last write lands.
        wait_for 5 same_tree "$SRC/$NAME" "$out/$NAME" || why="the download differs: $(same_tree "$SRC/$NAME" "$out/$NAME" 2>&1)"
    fi
    cleanup_cell
    if [ -n "$why" ]; then
        report "$@" fail "$why"
        FAILS=$((FAILS + 1))
    else
        local secs ttfb rate
        secs=$(echo "$t_done - $t0" | bc)
        ttfb=$(echo "$first - $t0" | bc)
        rate=$(echo "scale=1; $SIZE_MIB / ($full - $first + 0.001)" | bc)
        local note
        note=$(same_tree "$SRC/$NAME" "$out/$NAME" 2>&1)
        report "$@" pass "$(printf '%6.1f MiB/s  first byte %5.2f s  total %6.2f s' "$rate" "$ttfb" "$secs") $note"
        [ "${KEEP:-0}" = 1 ] || rm -rf "$CELL"
    fi
}
report() {
    local line
    line=$(printf '%-12s <- %-12s %-7s %-11s enc=%s  %-4s %s' "$2" "$1" "$3" "$4" "$ENC" "$5" "$6")
    echo "$line"
    [ -n "${OUT:-}" ] && echo "$line" >>"$OUT"
    [ "$5" = fail ] && [ "${KEEP:-0}" = 1 ] && echo "    logs: $CELL" || true
}

make_content
SIZE_BYTES=$(find "$SRC/$NAME" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
BASE_TORRENT=$WORK/base.torrent
IH=$("$RUMOR" create "$SRC/$NAME" -o "$BASE_TORRENT" -a http://127.0.0.1:1/announce) || exit 2
echo "# rumor interop matrix: $SIZE_MIB MiB, infohash $IH, ENC=$ENC, $(date -u +%FT%TZ)"
echo "# leecher    <- seeder       mode    tracker"
for client in $CLIENTS; do
    for tracker in $TRACKERS; do
        for mode in $MODES; do
            for dir in $DIRECTIONS; do
                case $dir in
                from-rumor) cell rumor "$client" "$mode" "$tracker" ;;
                to-rumor) [ "$client" = rumor ] || cell "$client" rumor "$mode" "$tracker" ;;
                esac
            done
            if [ "$BASELINE" = 1 ] && [ "$client" != libtorrent ] && [ "$client" != rumor ]; then
                cell libtorrent "$client" "$mode" "$tracker"
            fi
        done
    done
done
echo "# $FAILS failed"
[ "$FAILS" = 0 ]
