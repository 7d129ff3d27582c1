#!/usr/bin/python3
"""Regenerates the seed corpora in fuzz/corpus/ (the files are kept in git).

Run as root from the repository root:

    unshare -n -m -- sh -c 'ip link set lo up && /usr/bin/python3 fuzz/make_corpus.py'

It must run in a loopback-only network namespace: it starts a libtorrent
DHT node on 127.0.0.2 and captures its real KRPC replies.

* bencode: KRPC queries (BEP 5 shapes), replies and errors captured from a
  libtorrent 2.0 DHT node, BEP 10/9 extension messages, small edge cases.
* metainfo: .torrent files made by libtorrent (v1-only, and hybrid v1+v2
  with padding files), transmission-create and mktorrent, and one of file
  names no file system takes as they are, plus the bare info dictionary of
  each (what ut_metadata delivers).
* magnet: links with each parameter lodestone reads.
* krpc: the KRPC messages above again, as seeds of the KRPC codec target.
* handshake, wire_stream: hand-made edge cases (every message id once, a
  4 GiB length prefix, wrong fixed lengths, non-BitTorrent openings). The
  real-client seeds of these and of extension and ut_metadata come from
  tests/py/capture_corpus.py; dht_node's seeds are a minimised fuzzing
  corpus (its input is an `arbitrary` script, not a wire format).
"""

import hashlib
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile

import libtorrent as lt

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def save(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)
    if target == "bencode" and name.startswith("krpc-"):
        save("krpc", name[len("krpc-"):], data)


def krpc():
    info_hash = hashlib.sha1(b"lodestone corpus").digest()
    our_id = hashlib.sha1(b"corpus node").digest()
    queries = {
        "ping": {b"id": our_id},
        "find_node": {b"id": our_id, b"target": info_hash},
        "get_peers": {b"id": our_id, b"info_hash": info_hash},
        "sample_infohashes": {b"id": our_id, b"target": info_hash},
    }
    for name, args in queries.items():
        save("bencode", f"krpc-query-{name}",
             lt.bencode({b"t": b"aa", b"y": b"q", b"q": name.encode(), b"a": args}))
    save("bencode", "krpc-query-announce_peer", lt.bencode({
        b"t": b"ab", b"y": b"q", b"q": b"announce_peer",
        b"a": {b"id": our_id, b"info_hash": info_hash, b"implied_port": 1,
               b"port": 6881, b"token": b"aoeusnth"}}))

    session = lt.session({
        "listen_interfaces": "127.0.0.2:6881", "enable_dht": True,
        "dht_bootstrap_nodes": "", "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False, "dht_ignore_dark_internet": False,
    })
    peers = []
    for i in range(3):
        # A few other "nodes" so find_node and get_peers replies carry nodes.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.1.{i + 1}", 6881))
        peers.append(s)
        session.add_dht_node((f"127.0.1.{i + 1}", 6881))
    for s in peers:
        s.settimeout(3)
        try:
            data, sender = s.recvfrom(65536)  # libtorrent pings us
            save("bencode", f"krpc-libtorrent-query-{s.getsockname()[0]}", data)
            msg = lt.bdecode(data)
            reply = {b"t": msg[b"t"], b"y": b"r", b"r": {b"id": os.urandom(20)}}
            s.sendto(lt.bencode(reply), sender)
        except socket.timeout:
            pass

    sock = peers[0]
    node = ("127.0.0.2", 6881)

    def ask(name, message):
        sock.sendto(lt.bencode(message) if isinstance(message, dict) else message, node)
        while True:
            data, sender = sock.recvfrom(65536)
            if sender == node:
                save("bencode", f"krpc-libtorrent-{name}", data)
                return lt.bdecode(data)

    ask("ping-reply", {b"t": b"p1", b"y": b"q", b"q": b"ping", b"a": {b"id": our_id}})
    ask("find_node-reply", {b"t": b"f1", b"y": b"q", b"q": b"find_node",
                            b"a": {b"id": our_id, b"target": info_hash}})
    reply = ask("get_peers-reply-nodes", {b"t": b"g1", b"y": b"q", b"q": b"get_peers",
                                          b"a": {b"id": our_id, b"info_hash": info_hash}})
    token = reply[b"r"][b"token"]
    ask("announce_peer-reply", {b"t": b"a1", b"y": b"q", b"q": b"announce_peer",
                                b"a": {b"id": our_id, b"info_hash": info_hash,
                                       b"port": 6881, b"token": token}})
    ask("get_peers-reply-values", {b"t": b"g2", b"y": b"q", b"q": b"get_peers",
                                   b"a": {b"id": our_id, b"info_hash": info_hash}})
    ask("error-bad-token", {b"t": b"a2", b"y": b"q", b"q": b"announce_peer",
                            b"a": {b"id": our_id, b"info_hash": info_hash,
                                   b"port": 6881, b"token": b"wrong"}})
    ask("error-unknown-method", {b"t": b"u1", b"y": b"q", b"q": b"frobnicate",
                                 b"a": {b"id": our_id}})
    ask("sample_infohashes-reply", {b"t": b"s1", b"y": b"q", b"q": b"sample_infohashes",
                                    b"a": {b"id": our_id, b"target": info_hash}})
    # libtorrent ignores malformed datagrams; keep one as a seed anyway.
    save("bencode", "krpc-truncated-query", b"d1:t2:xx1:y1:q")
    for s in peers:
        s.close()
    del session


def extension_messages():
    save("bencode", "bep10-handshake", lt.bencode({
        b"m": {b"ut_metadata": 3, b"ut_pex": 1}, b"metadata_size": 31235,
        b"p": 6881, b"v": b"lodestone 0.1", b"yourip": b"\x7f\x00\x00\x01", b"reqq": 500}))
    save("bencode", "bep9-request", lt.bencode({b"msg_type": 0, b"piece": 0}))
    save("bencode", "bep9-data-header", lt.bencode({b"msg_type": 1, b"piece": 1,
                                                    b"total_size": 31235}) + b"rawbytes")
    save("bencode", "bep9-reject", lt.bencode({b"msg_type": 2, b"piece": 4}))
    edge = {
        "empty-string": b"0:", "empty-list": b"le", "empty-dict": b"de",
        "negative": b"i-42e", "zero": b"i0e", "int-max": b"i9223372036854775807e",
        "int-min": b"i-9223372036854775808e", "nested": b"l" * 7 + b"i1e" + b"e" * 7,
        "unsorted-keys": b"d1:bi1e1:ai2ee", "duplicate-keys": b"d1:ai1e1:ai2ee",
        "trailing": b"i5eGARBAGE", "leading-zero": b"i03e", "truncated": b"d3:abc",
    }
    for name, data in edge.items():
        save("bencode", f"edge-{name}", data)


def torrents():
    work = tempfile.mkdtemp()
    rng = random.Random(7)
    content = os.path.join(work, "album")
    os.makedirs(os.path.join(content, "disc 1"))
    for path, size in [("disc 1/01 intro.flac", 40000), ("disc 1/02 song.flac", 70001),
                       ("cover.jpg", 5000), ("notes.txt", 17)]:
        with open(os.path.join(content, path), "wb") as f:
            f.write(rng.randbytes(size))
    single = os.path.join(work, "single.iso")
    with open(single, "wb") as f:
        f.write(rng.randbytes(50000))

    def libtorrent(name, path, flags):
        fs = lt.file_storage()
        lt.add_files(fs, path)
        ct = lt.create_torrent(fs, 16384, flags=flags)
        ct.set_creator("libtorrent corpus")
        lt.set_piece_hashes(ct, work)
        save_torrent(name, lt.bencode(ct.generate()))

    def save_torrent(name, data):
        save("metainfo", f"{name}.torrent", data)
        save("metainfo", f"{name}.info", lt.bencode(lt.bdecode(data)[b"info"]))

    libtorrent("libtorrent-v1-multi", content, lt.create_torrent.v1_only)
    libtorrent("libtorrent-v1-single", single, lt.create_torrent.v1_only)
    libtorrent("libtorrent-hybrid-multi", content, 0)
    for tool, args in [
        ("mktorrent-multi", ["mktorrent", "-l", "15", "-a", "http://tracker.invalid/a",
                             "-c", "corpus", "-o", "{out}", content]),
        ("mktorrent-single-private", ["mktorrent", "-p", "-l", "15", "-o", "{out}", single]),
        ("transmission-multi", ["transmission-create", "-s", "16", "-c", "corpus",
                                "-o", "{out}", content]),
    ]:
        out = os.path.join(work, tool + ".torrent")
        subprocess.run([a.replace("{out}", out) for a in args], check=True,
                       stdout=subprocess.DEVNULL)
        with open(out, "rb") as f:
            save_torrent(tool, f.read())
    shutil.rmtree(work)
    # Names no file system takes as they are: over 255 bytes (with and
    # without an extension, in one- and two-byte characters), a run of
    # controls, a bidirectional override and a zero-width space.
    files = [
        ("a" * 300 + ".mkv", ),
        ("\n" * 300, ),
        ("dir\u202e", "x\u200by\x1b[2J"),
        ("\u00e9" * 200, ),
    ]
    save_torrent("hostile-names", lt.bencode({b"info": {
        b"name": b"hostile\x07names", b"piece length": 16384,
        b"files": [{b"length": 1, b"path": [c.encode() for c in path]} for path in files],
        b"pieces": hashlib.sha1(b"abcd").digest()}}))


def magnets():
    h = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
    links = {
        "bare-hex": h,
        "bare-base32": "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK",
        "minimal": f"magnet:?xt=urn:btih:{h}",
        "dn": f"magnet:?xt=urn:btih:{h}&dn=Some+Name%20%C3%A9",
        "trackers": f"magnet:?xt=urn:btih:{h}&tr=udp%3A%2F%2Ftracker.invalid%3A80"
                    f"&tr=http://t.invalid/announce",
        "peers": f"magnet:?xt=urn:btih:{h}&x.pe=127.0.0.1:6881&x.pe=[::1]:51413",
        "select-only": f"magnet:?xt=urn:btih:{h}&so=0,2,4-6",
        "hybrid": f"magnet:?xt=urn:btih:{h}&xt=urn:btmh:1220"
                  "caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e&dn=x",
        "everything": f"magnet:?dn=n&xt=urn:btih:{h}&tr=udp://a.invalid:1&x.pe=10.0.0.1:1"
                      "&so=1&xl=123&ws=http://w.invalid/",
        "not-magnet": "http://example.invalid/?xt=urn:btih:" + h,
    }
    for name, link in links.items():
        save("magnet", name, link)


def wire_seeds():
    protocol = b"\x13BitTorrent protocol"
    reserved = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x05])
    handshake = protocol + reserved + hashlib.sha1(b"wire").digest() + b"-LS0001-abcdefghijkl"
    save("handshake", "lodestone", handshake)
    save("handshake", "truncated-47", handshake[:47])
    save("handshake", "http-get", b"GET /announce HTTP/1.1\r\n\r\n")

    def msg(msg_id, payload=b""):
        return struct.pack("!IB", 1 + len(payload), msg_id) + payload

    u32 = lambda *v: struct.pack("!" + "I" * len(v), *v)
    every = b"".join([
        b"\0\0\0\0", msg(0), msg(1), msg(2), msg(3), msg(4, u32(7)), msg(5, b"\xff\xc0"),
        msg(6, u32(1, 0, 16384)), msg(7, u32(1, 0) + b"block"), msg(8, u32(1, 0, 16384)),
        msg(9, b"\x1a\xe1"), msg(13, u32(3)), msg(14), msg(15), msg(16, u32(1, 0, 16384)),
        msg(17, u32(2)), msg(20, b"\x00d1:md11:ut_metadatai3eee"),
        msg(20, b"\x03d8:msg_typei0e5:piecei0ee"), msg(99, b"unknown"),
    ])
    save("wire_stream", "every-message", handshake + every)
    save("wire_stream", "huge-prefix", handshake + b"\xff\xff\xff\xff\x07")
    save("wire_stream", "have-of-six-bytes", msg(4, b"\0" * 5))
    save("wire_stream", "split-mid-frame", msg(2) + msg(7, u32(0, 0) + b"x" * 100)[:60])


def holepunch_seeds():
    """ut_holepunch payloads (BEP 55): each type, both address types."""
    v4 = bytes([127, 0, 0, 3]) + struct.pack("!H", 6881)
    v6 = bytes(15) + b"\x01" + struct.pack("!H", 6881)
    save("ut_holepunch", "rendezvous-v4", b"\x00\x00" + v4 + bytes(4))
    save("ut_holepunch", "connect-v4", b"\x01\x00" + v4 + bytes(4))
    # libtorrent 2.0.8 sends connect and rendezvous without the error code.
    save("ut_holepunch", "libtorrent-connect-v4", b"\x01\x00" + v4)
    save("ut_holepunch", "error-no-support-v6", b"\x02\x01" + v6 + struct.pack("!I", 3))
    save("ut_holepunch", "unknown-type", b"\x07\x00" + v4 + bytes(4))
    save("ut_holepunch", "v6-type-v4-body", b"\x00\x01" + v4 + bytes(4))
    save("ut_holepunch", "burst-then-silence", bytes(8) + b"\xff" * 4 + bytes(8))


if __name__ == "__main__":
    holepunch_seeds()
    wire_seeds()
    extension_messages()
    magnets()
    torrents()
    krpc()
