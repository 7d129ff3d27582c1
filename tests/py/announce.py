#!/usr/bin/python3
"""Announces a peer into a DHT on its behalf (BEP 5 get_peers + announce_peer).

For clients that cannot join a loopback DHT themselves (transmission drops
DHT packets from 127.0.0.0/8). The KRPC queries are sent from --from-ip, so
the DHT nodes store --from-ip:--port as the peer.

Prints {"event": "announced", "nodes": [...]} listing the nodes that
acknowledged the announce, or {"event": "error", ...} and exits 1 if none did.
"""

import argparse
import os
import socket
import sys

import libtorrent as lt

from ltcommon import emit, log, parse_endpoint


def query(sock, node, method, args, tid):
    message = {b"t": tid, b"y": b"q", b"q": method, b"a": args}
    sock.sendto(lt.bencode(message), node)
    while True:
        data, sender = sock.recvfrom(65536)
        if sender != node:
            continue
        reply = lt.bdecode(data)
        if not isinstance(reply, dict) or reply.get(b"t") != tid:
            continue
        if reply.get(b"y") != b"r":
            raise RuntimeError(f"{method.decode()} to {node} failed: {reply!r}")
        return reply[b"r"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from-ip", required=True)
    p.add_argument("--port", type=int, required=True, help="the peer's TCP port")
    p.add_argument("--info-hash", required=True, help="hex")
    p.add_argument("--nodes", required=True, help="comma-separated IP:PORT")
    p.add_argument("--timeout", type=float, default=5.0, help="per query, s")
    args = p.parse_args()

    info_hash = bytes.fromhex(args.info_hash)
    node_id = os.urandom(20)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.from_ip, 0))
    sock.settimeout(args.timeout)
    acked = []
    for i, text in enumerate(filter(None, args.nodes.split(","))):
        node = parse_endpoint(text)
        try:
            reply = query(sock, node, b"get_peers",
                          {b"id": node_id, b"info_hash": info_hash}, b"g%d" % i)
            query(sock, node, b"announce_peer",
                  {b"id": node_id, b"info_hash": info_hash, b"port": args.port,
                   b"token": reply[b"token"], b"implied_port": 0}, b"a%d" % i)
            acked.append(text)
        except (OSError, RuntimeError, KeyError) as e:
            log(f"announce to {text} failed: {e}")
    if not acked:
        emit("error", message="no DHT node acknowledged the announce")
        sys.exit(1)
    emit("announced", nodes=acked)


if __name__ == "__main__":
    main()
