#!/usr/bin/python3
"""libtorrent sessions whose only DHT contact is one lodestone node.

Run by crates/cli/tests/node.rs inside a loopback-only network namespace.
Unlike tests/py/swarm.py, the sessions are NOT wired to each other: each one
knows only --node (added with add_dht_node, so it is an ordinary contact and
not a router), and must find the others through it.

1. Writes deterministic content and a v1 .torrent (helpers from swarm.py).
2. Starts one DHT session per --dht-ip and one seeding session on
   --seeder-ip, each told about --node only.
3. Emits {"event": "meshed", "counts": [...], "t": S} once every session's
   routing table holds at least --want nodes, then {"event": "ready", ...}
   once a get_peers lookup from a DHT session finds the seeder.
4. Exits when stdin closes.
"""

import argparse
import os
import queue
import sys
import time

sys.path.insert(0, os.environ["LODESTONE_HARNESS_PY"])

import libtorrent as lt  # noqa: E402

from ltcommon import dht_node_count, emit, log, make_session, parse_endpoint, stdin_commands  # noqa: E402
from swarm import file_paths, lookup, make_torrent, write_content  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--node", required=True, help="IP:PORT of the lodestone node")
    p.add_argument("--dht-ips", required=True)
    p.add_argument("--seeder-ip", required=True)
    p.add_argument("--port", type=int, default=6881)
    p.add_argument("--want", type=int, required=True, help="routing-table size that counts as meshed")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    started = time.monotonic()
    deadline = started + args.timeout
    node = parse_endpoint(args.node)

    content = os.path.join(args.workdir, "content")
    os.makedirs(content, exist_ok=True)
    files = write_content(content, file_paths("content", 2, False), [150_000, 40_000], 7)
    torrent_path = os.path.join(args.workdir, "content.torrent")
    info = make_torrent(content, "content", 0, torrent_path)
    info_hash = info.info_hashes().v1

    sessions = []
    for ip in filter(None, args.dht_ips.split(",")):
        session = make_session(ip, args.port)
        session.add_dht_node(node)
        sessions.append(session)
    seeder = make_session(args.seeder_ip, args.port, extra={"dht_announce_interval": 2})
    seeder.add_dht_node(node)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent_path)
    params.save_path = content
    params.flags = lt.torrent_flags.seed_mode
    seeder.add_torrent(params)

    everyone = sessions + [seeder]
    while True:
        counts = [dht_node_count(s) for s in everyone]
        if all(c >= args.want for c in counts):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"routing tables stayed small: {counts}, wanted {args.want}")
    emit("meshed", counts=counts, meshed_s=round(time.monotonic() - started, 3))

    want = f"{args.seeder_ip}:{args.port}"
    found = set()
    while want not in found:
        if time.monotonic() > deadline:
            raise TimeoutError(f"seeder not found in the DHT: found {sorted(found)}")
        found |= lookup(sessions[0], info_hash, deadline)
    emit(
        "ready",
        info_hash=str(info_hash),
        name="content",
        seeder=want,
        files=files,
        total_length=info.total_size(),
        ready_s=round(time.monotonic() - started, 3),
    )

    commands = stdin_commands()
    while True:
        try:
            command = commands.get(timeout=0.5)
        except queue.Empty:
            for session in everyone:
                session.pop_alerts()
            continue
        if command is None:
            log("stdin closed, exiting")
            return


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        emit("error", message=f"{type(e).__name__}: {e}")
        raise
