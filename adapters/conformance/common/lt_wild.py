"""python3-libtorrent as the reference for torrents made by other clients
(the bt_wild suite). Run with /usr/bin/python3.

usage:
  lt_wild.py make SRC OUT KIND PIECE_LEN
      a .torrent of the file or directory SRC, as libtorrent 2.0 makes it:
      KIND is hybrid (v1+v2, padding files), v1pad (v1 with padding files),
      v2 (v2 only); symlinks are stored as BEP 47 links; prints the v1
      infohash (or "none" for v2).
  lt_wild.py judge TORRENT...
      one line per torrent: "ok" or "refused <libtorrent's reason>".
  lt_wild.py materialize TORRENT SAVE CONTENT
      writes the torrent's files where libtorrent expects them under SAVE
      (its own sanitized paths), each the slice of the file CONTENT (the
      torrent's bytes concatenated, padding included) at the file's offset;
      padding files are skipped. Prints each path written.
"""
import os, sys
import libtorrent as lt


def make(src, out, kind, piece_len):
    fs = lt.file_storage()
    lt.add_files(fs, src, flags=lt.create_torrent.symlinks)
    flags = lt.create_torrent.symlinks
    if kind == "v1pad":
        flags |= lt.create_torrent.v1_only | lt.create_torrent.canonical_files
    elif kind == "v2":
        flags |= lt.create_torrent.v2_only
    elif kind != "hybrid":
        raise SystemExit("unknown kind " + kind)
    ct = lt.create_torrent(fs, piece_len, flags=flags)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(src)))
    data = lt.bencode(ct.generate())
    with open(out, "wb") as f:
        f.write(data)
    ti = lt.torrent_info(out)
    print(str(ti.info_hashes().v1) if kind != "v2" else "none")


def judge(paths):
    for p in paths:
        try:
            lt.torrent_info(p)
            print("ok", flush=True)
        except Exception as e:  # libtorrent raises RuntimeError with its reason
            print("refused", str(e).replace("\n", " "), flush=True)


def materialize(torrent, save, content):
    ti = lt.torrent_info(torrent)
    fs = ti.files()
    with open(content, "rb") as f:
        data = f.read()
    for i in range(fs.num_files()):
        flags = fs.file_flags(i)
        if flags & lt.file_storage.flag_pad_file or flags & lt.file_storage.flag_symlink:
            continue
        path = os.path.join(save, fs.file_path(i))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        off, size = fs.file_offset(i), fs.file_size(i)
        with open(path, "wb") as f:
            f.write(data[off:off + size])
        print(fs.file_path(i), flush=True)


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif cmd == "judge":
        judge(sys.argv[2:])
    elif cmd == "materialize":
        materialize(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit("unknown command " + cmd)


main()
