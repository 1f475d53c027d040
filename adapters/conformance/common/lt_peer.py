"""A libtorrent peer for rumor's interop tests and benchmark.

usage: lt_peer.py seed|leech TORRENT SAVE_PATH PORT [--peer HOST:PORT]... [--timeout S]
                 [--enc forced|disabled]

--enc forced: Message Stream Encryption with RC4 only, both ways;
--enc disabled: plain only, both ways (default: dial plain, accept both).

TORRENT may be a magnet link (leech): the metadata then comes from peers.

seed: serves SAVE_PATH (checked first, or --seed-mode to trust it) until killed.
leech: downloads into SAVE_PATH; exits 0 when complete and prints
"DONE bytes seconds", non-zero on timeout. Run with /usr/bin/python3.
"""
import sys, time
import libtorrent as lt

def main():
    mode, torrent, save, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rest = sys.argv[5:]
    peers, timeout, seed_mode, enc = [], 120.0, False, None
    i = 0
    while i < len(rest):
        if rest[i] == "--peer":
            h, p = rest[i + 1].rsplit(":", 1); peers.append((h, int(p))); i += 2
        elif rest[i] == "--timeout":
            timeout = float(rest[i + 1]); i += 2
        elif rest[i] == "--enc":
            enc = rest[i + 1]; i += 2
        elif rest[i] == "--seed-mode":
            seed_mode = True; i += 1
        else:
            raise SystemExit("unknown argument " + rest[i])
    settings = {
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "out_enc_policy": 2, "in_enc_policy": 1,
        "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
    }
    if enc == "forced":
        forced, rc4 = int(lt.enc_policy.pe_forced), int(lt.enc_level.pe_rc4)
        settings.update({"out_enc_policy": forced, "in_enc_policy": forced, "allowed_enc_level": rc4})
    elif enc == "disabled":
        disabled = int(lt.enc_policy.pe_disabled)
        settings.update({"out_enc_policy": disabled, "in_enc_policy": disabled})
    elif enc is not None:
        raise SystemExit("unknown --enc " + enc)
    s = lt.session(settings)
    if torrent.startswith("magnet:"):
        params = lt.parse_magnet_uri(torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
    params.save_path = save
    if seed_mode:
        params.flags |= lt.torrent_flags.seed_mode
    h = s.add_torrent(params)
    start = time.time()
    connected = False
    last = 0
    while True:
        st = h.status()
        ready = (lt.torrent_status.downloading_metadata, lt.torrent_status.downloading, lt.torrent_status.seeding, lt.torrent_status.finished)
        if st.state in ready and not connected:
            for p in peers:
                h.connect_peer(p)
            connected = True
        for a in s.pop_alerts():
            if a.category() & lt.alert.category_t.error_notification:
                print("alert:", a.message(), flush=True)
        now = time.time()
        if now - last > 2:
            last = now
            print("state=%s progress=%.3f down=%d up=%d peers=%d" % (st.state, st.progress, st.download_rate, st.upload_rate, st.num_peers), flush=True)
            if connected:
                for p in peers:
                    h.connect_peer(p)
        if mode == "leech" and st.is_seeding:
            el = time.time() - start
            print("DONE %d %.3f" % (st.total_wanted, el), flush=True)
            return 0
        if mode == "leech" and now - start > timeout:
            print("TIMEOUT", flush=True)
            return 1
        time.sleep(0.05)

sys.exit(main())
