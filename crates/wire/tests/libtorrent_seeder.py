#!/usr/bin/python3
"""A libtorrent seeder that records its greeting for the wire crate's golden capture. Run it inside a network namespace only:

    unshare -n -m sh -c 'ip link set lo up; /usr/bin/python3 libtorrent_seeder.py DIR MIB [CAPTURE]'

Creates DIR/payload.bin (MIB MiB of pseudo-random bytes), a torrent with 256 KiB pieces,
seeds it on 127.0.0.1:6881 with encryption, DHT, LSD, UPnP, NAT-PMP and uTP off, prints
`READY <infohash hex> 127.0.0.1:6881` and seeds until stdin closes.

With CAPTURE, it instead connects once to itself with a plain handshake (extension, fast
and DHT bits), saves everything the seeder sends in 3 seconds to CAPTURE, and exits; that
is how fixtures/libtorrent-2.0.8-seeder-greeting.bin was made (DIR anywhere, MIB = 1).
"""
import os
import random
import socket
import sys
import time

import libtorrent as lt


def main():
    directory, mib = sys.argv[1], int(sys.argv[2])
    capture = sys.argv[3] if len(sys.argv) > 3 else None
    os.makedirs(directory, exist_ok=True)
    payload = os.path.join(directory, "payload.bin")
    rng = random.Random(7)
    with open(payload, "wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(1 << 20))
    fs = lt.file_storage()
    lt.add_files(fs, payload)
    ct = lt.create_torrent(fs, 256 * 1024)
    lt.set_piece_hashes(ct, directory)
    ti = lt.torrent_info(lt.bdecode(lt.bencode(ct.generate())))
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:6881",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_incoming_utp": False, "enable_outgoing_utp": False,
        "in_enc_policy": 2, "out_enc_policy": 2,
        # Defaults cap a single upload far below loopback speed.
        "send_buffer_watermark": 16 << 20, "send_buffer_low_watermark": 4 << 20,
        "send_buffer_watermark_factor": 200, "max_queued_disk_bytes": 64 << 20,
        "aio_threads": 4, "send_socket_buffer_size": 4 << 20,
    })
    handle = ses.add_torrent({"ti": ti, "save_path": directory})
    while not handle.status().is_seeding:
        time.sleep(0.05)
    info_hash = ti.info_hashes().v1.to_bytes()
    if capture:
        sock = socket.create_connection(("127.0.0.1", 6881))
        reserved = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x05])
        sock.sendall(b"\x13BitTorrent protocol" + reserved + info_hash + b"-LS0001-capturetest1")
        sock.settimeout(1.5)
        received = b""
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            received += chunk
        with open(capture, "wb") as f:
            f.write(received)
        return
    print("READY", info_hash.hex(), "127.0.0.1:6881", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
