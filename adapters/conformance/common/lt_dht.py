"""A private Mainline DHT of libtorrent sessions on loopback, for rumor's
DHT interop tests.

usage: lt_dht.py PORT,PORT,... [--bootstrap HOST:PORT]... [--seed TORRENT SAVE]
                 [--leech MAGNET SAVE PORT [--leech-when PATH]] [--timeout S]

Starts one session per PORT (TCP and UDP on 127.0.0.1), each bootstrapped
to the others and to every --bootstrap, with the settings that let several
nodes on one address see each other. --seed: the first session also seeds
TORRENT from SAVE and announces it to the DHT (force_dht_announce after
the DHT settles, ~8 s, then every 5 s). Prints "READY" once settled.
--leech: once settled, one more session on its own PORT downloads MAGNET
into SAVE through the DHT alone (bootstrapped to the first session only);
exits 0 printing "DONE" when complete, 1 on timeout. With --leech-when
it starts only once PATH exists (after what it should find was announced:
a libtorrent download looks the DHT up when added, then every 15
minutes). Without --leech it runs until killed. Run with /usr/bin/python3.
"""
import os, sys, time
import libtorrent as lt

SETTLE_S = 8


def session(port, bootstrap):
    return lt.session({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_dht": True, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "dht_bootstrap_nodes": ",".join(bootstrap),
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
        | lt.alert.category_t.dht_notification,
    })


def main():
    ports = [int(p) for p in sys.argv[1].split(",")]
    rest = sys.argv[2:]
    extra, seed, leech, timeout, when = [], None, None, 90.0, None
    i = 0
    while i < len(rest):
        if rest[i] == "--bootstrap":
            extra.append(rest[i + 1]); i += 2
        elif rest[i] == "--seed":
            seed = (rest[i + 1], rest[i + 2]); i += 3
        elif rest[i] == "--leech":
            leech = (rest[i + 1], rest[i + 2], int(rest[i + 3])); i += 4
        elif rest[i] == "--leech-when":
            when = rest[i + 1]; i += 2
        elif rest[i] == "--timeout":
            timeout = float(rest[i + 1]); i += 2
        else:
            raise SystemExit("unknown argument " + rest[i])
    sessions = []
    for p in ports:
        others = ["127.0.0.1:%d" % q for q in ports if q != p] + extra
        sessions.append(session(p, others))
    handle = None
    if seed:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(seed[0])
        params.save_path = seed[1]
        handle = sessions[0].add_torrent(params)
    start = time.time()
    ready = False
    last_announce = 0
    leecher = lh = None
    last_print = 0
    while True:
        now = time.time()
        for s in sessions + ([leecher] if leecher else []):
            for a in s.pop_alerts():
                if a.category() & lt.alert.category_t.error_notification:
                    print("alert:", a.message(), flush=True)
        if not ready and now - start >= SETTLE_S:
            ready = True
            nodes = [s.status().dht_nodes for s in sessions]
            print("READY dht_nodes=%s" % nodes, flush=True)
        if ready and leech and leecher is None and (when is None or os.path.exists(when)):
            leecher = session(leech[2], ["127.0.0.1:%d" % ports[0]])
            params = lt.parse_magnet_uri(leech[0])
            params.save_path = leech[1]
            lh = leecher.add_torrent(params)
            leech_start = now
        if ready and handle is not None and now - last_announce >= 5:
            last_announce = now
            handle.force_dht_announce()
        if now - last_print > 2:
            last_print = now
            nodes = [s.status().dht_nodes for s in sessions]
            line = "t=%.0f dht_nodes=%s" % (now - start, nodes)
            if handle is not None:
                st = handle.status()
                line += " seed: state=%s peers=%d up=%d" % (st.state, st.num_peers, st.upload_rate)
            if lh is not None:
                st = lh.status()
                line += " leech: state=%s progress=%.3f peers=%d" % (st.state, st.progress, st.num_peers)
            print(line, flush=True)
        if lh is not None:
            st = lh.status()
            if st.is_seeding:
                print("DONE %d %.3f" % (st.total_wanted, now - leech_start), flush=True)
                return 0
            if now - leech_start > timeout:
                print("TIMEOUT", flush=True)
                return 1
        time.sleep(0.05)


sys.exit(main())
