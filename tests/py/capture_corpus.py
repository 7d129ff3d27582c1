#!/usr/bin/python3
"""Captures real DHT and peer wire traffic between libtorrent, aria2 and
transmission, and splits it into fuzz seed corpora (fuzz/corpus/<target>/).

Run as root from the repository root, in a loopback-only network namespace:

    unshare -n -m -- sh -c 'ip link set lo up && /usr/bin/python3 tests/py/capture_corpus.py'

Nothing but `lo` exists in there, so nothing leaves the machine. The script
sniffs `lo` with an AF_PACKET socket (no tcpdump needed) while:

* three libtorrent DHT nodes (127.0.1.1-3) and a libtorrent seeder
  (127.0.2.1) run a private DHT; the seeder announces a small torrent;
* aria2c (127.0.4.1) downloads the torrent from a magnet link, finding the
  seeder through the DHT (aria2's own KRPC, libtorrent's answers), fetching
  the metadata over ut_metadata and the pieces over the peer wire;
* transmission-cli (127.0.5.1) seeds the same torrent, and a libtorrent
  downloader (127.0.3.1) fetches it by magnet from transmission and the
  libtorrent seeder (transmission serves ut_metadata and pieces).

Then every captured datagram and TCP stream is split:

* krpc: one file per KRPC datagram, a few of each (client, kind, method);
* wire_stream: one file per TCP direction, cut to 12 KiB (handshake,
  bitfield, BEP 10 handshake, ut_metadata, requests, the first pieces);
* handshake: the first 68 bytes of each stream;
* extension: each BEP 10 extension handshake payload;
* ut_metadata: each ut_metadata payload (requests, data, rejects).

File names say who sent what (`aria2-...`, `transmission-...`,
`libtorrent-...`), so the replay test can check that real clients' messages
are accepted.
"""

import hashlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import libtorrent as lt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltcommon import make_session  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fuzz", "corpus")
STREAM_CUT = 12 * 1024
PROTOCOL = b"\x13BitTorrent protocol"
PORT = 6881
PLAIN = {"in_enc_policy": 1, "out_enc_policy": 2}  # accept anything, send plaintext


def client_of(ip):
    """Which client owns a 127.0.x.y address in this scenario."""
    third = int(ip.split(".")[2])
    return {1: "libtorrent", 2: "libtorrent", 3: "libtorrent", 4: "aria2",
            5: "transmission"}.get(third, "other")


class Sniffer:
    """Records every IPv4 UDP datagram and TCP segment sent on lo."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.udp = []          # (src, dst, payload)
        self.tcp = {}          # (src, dst) -> {seq: payload}
        self.isn = {}          # (src, dst) -> first sequence number of data
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                frame, addr = self.sock.recvfrom(1 << 17)
            except socket.timeout:
                continue
            if addr[2] != socket.PACKET_OUTGOING:
                continue  # every loopback packet is seen twice
            self.parse(frame)

    def parse(self, frame):
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        proto = ip[9]
        src_ip = socket.inet_ntoa(ip[12:16])
        dst_ip = socket.inet_ntoa(ip[16:20])
        body = ip[ihl:total]
        if proto == 17 and len(body) >= 8:
            sport, dport = struct.unpack("!HH", body[:4])
            self.udp.append(((src_ip, sport), (dst_ip, dport), bytes(body[8:])))
        elif proto == 6 and len(body) >= 20:
            sport, dport, seq = struct.unpack("!HHI", body[:8])
            offset = (body[12] >> 4) * 4
            flags = body[13]
            key = ((src_ip, sport), (dst_ip, dport))
            if flags & 0x02:  # SYN: data starts at seq + 1
                self.isn[key] = (seq + 1) & 0xFFFFFFFF
                self.tcp.setdefault(key, {})
            payload = bytes(body[offset:])
            if payload:
                self.tcp.setdefault(key, {}).setdefault(seq, payload)

    def finish(self):
        self.stop = True
        self.thread.join()
        self.sock.close()

    def streams(self):
        """Each TCP direction reassembled from its first data byte (loopback
        neither loses nor reorders, but retransmissions are skipped)."""
        out = {}
        for key, segments in self.tcp.items():
            if key not in self.isn or not segments:
                continue
            expect = self.isn[key]
            data = bytearray()
            for seq in sorted(segments, key=lambda s: (s - self.isn[key]) & 0xFFFFFFFF):
                payload = segments[seq]
                skip = (expect - seq) & 0xFFFFFFFF
                if skip >= len(payload) and skip < 1 << 31:
                    continue  # a retransmission of bytes we have
                if skip >= 1 << 31:
                    break  # a gap: stop rather than splice
                data += payload[skip:]
                expect = (expect + len(payload) - skip) & 0xFFFFFFFF
                if len(data) >= STREAM_CUT:
                    break
            out[key] = bytes(data[:STREAM_CUT])
        return out


def save(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


def make_content(work):
    content = os.path.join(work, "content")
    os.makedirs(content)
    rng = random.Random(11)
    with open(os.path.join(content, "capture.bin"), "wb") as f:
        f.write(rng.randbytes(300_000))
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(content, "capture.bin"))
    ct = lt.create_torrent(fs, 16384, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, content)
    data = lt.bencode(ct.generate())
    path = os.path.join(work, "capture.torrent")
    with open(path, "wb") as f:
        f.write(data)
    info = lt.torrent_info(path)
    return content, path, info


def transmission(work, torrent, content):
    config = os.path.join(work, "transmission")
    os.makedirs(config)
    import json
    settings = {
        "bind-address-ipv4": "127.0.5.1", "bind-address-ipv6": "::1",
        "peer-port": 51413, "peer-port-random-on-start": False,
        "port-forwarding-enabled": False, "dht-enabled": False, "lpd-enabled": False,
        "utp-enabled": False, "pex-enabled": True, "encryption": 0,
        "blocklist-enabled": False, "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False, "download-dir": content,
        "incomplete-dir-enabled": False, "message-level": 1,
    }
    with open(os.path.join(config, "settings.json"), "w") as f:
        json.dump(settings, f)
    return subprocess.Popen(
        ["transmission-cli", "-g", config, "-w", content, "-p", "51413", "-M", "-B", "-U",
         "-et", "-v", torrent],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_scenario(work):
    content, torrent, info = make_content(work)
    ih = str(info.info_hash())
    magnet = f"magnet:?xt=urn:btih:{ih}&dn=capture.bin"
    sessions = []
    nodes = []
    for i in range(1, 4):
        s = make_session(f"127.0.1.{i}", PORT, extra=PLAIN)
        nodes.append(s)
    sessions += nodes
    for s in nodes:
        for j in range(1, 4):
            s.add_dht_node((f"127.0.1.{j}", PORT))
    seeder = make_session("127.0.2.1", PORT, extra=PLAIN)
    sessions.append(seeder)
    seeder.add_dht_node(("127.0.1.1", PORT))
    seeder.add_torrent({"ti": info, "save_path": content,
                        "flags": lt.torrent_flags.seed_mode})
    trans = transmission(work, torrent, content)
    time.sleep(3)  # let the DHT settle and the seeder announce (capture, not a test)

    out_aria = os.path.join(work, "aria2")
    aria = subprocess.Popen(
        ["aria2c", f"--dir={out_aria}", "--interface=127.0.4.1", "--bt-external-ip=127.0.4.1",
         f"--listen-port={PORT}", f"--dht-listen-port={PORT}", "--enable-dht=true",
         f"--dht-entry-point=127.0.1.1:{PORT}", f"--dht-entry-point=127.0.1.2:{PORT}",
         f"--dht-file-path={work}/aria2-dht.dat", "--bt-enable-lpd=false",
         "--enable-dht6=false", "--disable-ipv6=true", "--seed-time=0",
         "--bt-min-crypto-level=plain", "--bt-require-crypto=false",
         "--summary-interval=0", "--console-log-level=warn", "--no-conf=true",
         "--bt-save-metadata=false", magnet],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    downloader = make_session("127.0.3.1", PORT, extra=PLAIN)
    sessions.append(downloader)
    downloader.add_dht_node(("127.0.1.2", PORT))
    params = lt.parse_magnet_uri(magnet)
    params.save_path = os.path.join(work, "lt-down")
    handle = downloader.add_torrent(params)
    handle.connect_peer(("127.0.5.1", 51413))
    handle.connect_peer(("127.0.2.1", PORT))

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        lt_done = handle.status().is_seeding
        if lt_done and aria.poll() is not None:
            break
        if not lt_done and int(time.monotonic()) % 5 == 0:
            handle.connect_peer(("127.0.5.1", 51413))
        time.sleep(0.5)
    print("aria2 exit:", aria.poll(), "libtorrent done:", handle.status().is_seeding,
          file=sys.stderr)
    for p in (aria, trans):
        if p.poll() is None:
            p.terminate()
            p.wait(10)
    del sessions, nodes, seeder, downloader


def frames(stream):
    """The peer wire messages of a stream after its handshake: (id, payload)."""
    pos = 68
    while pos + 4 <= len(stream):
        (length,) = struct.unpack("!I", stream[pos:pos + 4])
        if pos + 4 + length > len(stream):
            return
        if length:
            yield stream[pos + 4], stream[pos + 5:pos + 4 + length]
        pos += 4 + length


def split(sniffer):
    counts = {}

    def keep(target, base, data, limit):
        n = counts.get((target, base), 0)
        if n >= limit:
            return
        counts[(target, base)] = n + 1
        save(target, f"{base}-{n}", data)

    for src, dst, payload in sniffer.udp:
        if PORT not in (src[1], dst[1]) and 51413 not in (src[1], dst[1]):
            continue
        try:
            msg = lt.bdecode(payload)
        except Exception:
            msg = None
        if not isinstance(msg, dict) or b"y" not in msg:
            continue
        kind = {b"q": "query", b"r": "reply", b"e": "error"}.get(msg[b"y"], "other")
        method = msg.get(b"q", b"").decode(errors="replace")
        shape = "-".join(sorted(k.decode(errors="replace") for k in msg.get(b"r", {}) or {}))
        base = f"{client_of(src[0])}-{kind}-{method or shape or 'x'}"
        keep("krpc", base, payload, 3)

    streams = sniffer.streams()
    handshakes = {}
    for (src, dst), data in streams.items():
        if data.startswith(PROTOCOL) and len(data) >= 68:
            handshakes[(src, dst)] = data
    for (src, dst), data in handshakes.items():
        sender, receiver = client_of(src[0]), client_of(dst[0])
        base = f"{sender}-to-{receiver}"
        keep("wire_stream", base, data, 2)
        keep("handshake", sender, data[:68], 2)
        # The ut_metadata id the sender must use is the receiver's choice.
        theirs = handshakes.get((dst, src), b"")
        ut_id = None
        for msg_id, payload in frames(theirs):
            if msg_id == 20 and payload[:1] == b"\x00":
                try:
                    ut_id = lt.bdecode(payload[1:]).get(b"m", {}).get(b"ut_metadata")
                except Exception:
                    pass
        for msg_id, payload in frames(data):
            if msg_id != 20 or not payload:
                continue
            if payload[0] == 0:
                keep("extension", sender, payload[1:], 2)
            elif payload[0] == ut_id:
                body = payload[1:]
                # The dictionary ends at the first "ee" (its last value is an int).
                end = body.find(b"ee") + 2
                try:
                    msg_type = lt.bdecode(body[:end]).get(b"msg_type")
                except Exception:
                    msg_type = None
                kind = {0: "request", 1: "data", 2: "reject"}.get(msg_type, "other")
                if kind == "data":
                    body = body[:end + 512]  # the dictionary and a slice of the piece
                keep("ut_metadata", f"{sender}-{kind}", body, 2)
    return counts


def main():
    work = tempfile.mkdtemp(prefix="lodestone-capture-")
    sniffer = Sniffer()
    try:
        run_scenario(work)
    finally:
        sniffer.finish()
        shutil.rmtree(work, ignore_errors=True)
    counts = split(sniffer)
    for (target, base), n in sorted(counts.items()):
        print(f"{target:12} {base:40} {n}")


if __name__ == "__main__":
    main()
