#!/usr/bin/python3
"""A private Mainline DHT of libtorrent sessions on loopback, with seeders.

Run by lodestone_tests::swarm::Swarm inside a loopback-only network namespace.

1. Writes deterministic content (seeded PRNG, given file sizes) and a v1-only
   .torrent for it.
2. Starts one libtorrent session per --dht-ip, all on --port, and wires them
   together with add_dht_node (a node named in dht_bootstrap_nodes would be
   treated as a router and never enter routing tables). Processes given the
   same address (every one on ::1, for an IPv6 swarm) take consecutive ports
   from --port instead.
3. Starts one seeding session per --seeder-ip; libtorrent announces the
   torrent into the DHT by itself.
4. Becomes ready once a get_peers lookup from a DHT node finds every seeder,
   then prints one "ready" event (see README-infra / swarm.rs for the fields).
5. Serves commands read from stdin, one JSON object per line:
     {"cmd": "get_peers", "info_hash": HEX, "want": [IP:PORT, ...]}
                                             -> {"event": "peers", ...}
       (one lookup without `want`; with it, lookups repeat for up to
       20 s until every `want` peer is found)
     {"cmd": "add_node", "addr": "IP:PORT"}  -> {"event": "node_added", ...}
     {"cmd": "uploads"}  -> {"event": "uploads", "uploads": {SEEDER: BYTES}}
   and exits when stdin closes.
"""

import argparse
import hashlib
import json
import os
import queue
import random
import sys
import time

import libtorrent as lt

from ltcommon import dht_node_count, emit, log, make_session, stdin_commands, wait_listening


# Seconds a readiness lookup may take before it is asked again.
LOOKUP_RETRY = 3.0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--workdir", required=True)
    p.add_argument("--dht-ips", required=True, help="comma-separated IP addresses")
    p.add_argument("--seeder-ips", default="", help="comma-separated IP addresses")
    p.add_argument("--port", type=int, default=6881)
    p.add_argument("--file-sizes", required=True, help="comma-separated byte counts")
    p.add_argument("--name", default="content")
    p.add_argument("--single-file", action="store_true",
                   help="with one file size: a single-file torrent")
    p.add_argument("--piece-length", type=int, default=0, help="0: libtorrent picks")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="readiness deadline, s")
    p.add_argument("--utp", action="store_true")
    p.add_argument("--seeder-settings", default="[]",
                   help="JSON list of libtorrent settings dicts, one per seeder (cycled)")
    p.add_argument("--utp-only-seeders", type=int, default=0,
                   help="the first N seeders speak uTP only, without TCP")
    return p.parse_args()


def file_paths(name, count, single):
    """Relative paths of the content files; some sit in a subdirectory so
    multi-file path handling is exercised."""
    if single:
        return [name]
    return [
        os.path.join(name, "sub" if i % 3 == 2 else "", f"file-{i:02}.bin")
        for i in range(count)
    ]


def write_content(root, paths, sizes, seed):
    """Writes each file from its own seeded PRNG; returns per-file hashes."""
    files = []
    for index, (rel, size) in enumerate(zip(paths, sizes)):
        path = os.path.normpath(os.path.join(root, rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rng = random.Random(seed * 1_000_003 + index)
        sha1 = hashlib.sha1()
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = rng.randbytes(min(left, 1 << 20))
                sha1.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        files.append({"path": os.path.normpath(rel), "length": size, "sha1": sha1.hexdigest()})
    return files


def make_torrent(root, name, piece_length, torrent_path):
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(root, name))
    ct = lt.create_torrent(fs, piece_length, flags=lt.create_torrent.v1_only)
    ct.set_creator("lodestone test harness")
    lt.set_piece_hashes(ct, root)
    data = lt.bencode(ct.generate())
    with open(torrent_path, "wb") as f:
        f.write(data)
    return lt.torrent_info(torrent_path)


def endpoint(ip, port):
    """'ip:port', the IPv6 address in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def assign_ports(ips, port):
    """One (ip, port) per process: `port`, or for the second and later
    processes on one address the next ports after it."""
    used = {}
    endpoints = []
    for ip in ips:
        endpoints.append((ip, port + used.get(ip, 0)))
        used[ip] = used.get(ip, 0) + 1
    return endpoints


def wait_routing_tables(sessions, want, deadline):
    """Until every session knows at least `want` DHT nodes."""
    while True:
        counts = [dht_node_count(s) for s in sessions]
        if all(c is not None and c >= want for c in counts):
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"DHT routing tables stayed small: {counts}, wanted {want}")


def lookup(session, info_hash, deadline):
    """One get_peers lookup; returns the set of 'ip:port' found.

    libtorrent posts its reply alert only when a node answers with peers:
    a lookup that finds none ends silently, and this waits out `deadline`."""
    session.dht_get_peers(info_hash)
    while time.monotonic() < deadline:
        if not session.wait_for_alert(250):
            continue
        for alert in session.pop_alerts():
            if isinstance(alert, lt.dht_get_peers_reply_alert) and alert.info_hash == info_hash:
                return {endpoint(ip, port) for ip, port in alert.peers()}
    return set()


def lookup_until(session, info_hash, want, deadline):
    """Lookups until the peers found include every one of `want`, or until
    `deadline`; returns all found.

    A lookup that ran before the announces finds nothing and says nothing,
    and its first answer comes from whichever node replies first, which may
    not have heard every announce yet: each lookup gets a few seconds, then
    the next one adds what it finds."""
    found = set()
    while not want <= found and time.monotonic() < deadline:
        found |= lookup(session, info_hash, min(deadline, time.monotonic() + LOOKUP_RETRY))
    return found


def main():
    args = parse_args()
    started = time.monotonic()
    deadline = started + args.timeout
    dht_ips = [ip for ip in args.dht_ips.split(",") if ip]
    seeder_ips = [ip for ip in args.seeder_ips.split(",") if ip]
    sizes = [int(s) for s in args.file_sizes.split(",") if s]
    if args.single_file and len(sizes) != 1:
        sys.exit("--single-file needs exactly one file size")

    content = os.path.join(args.workdir, "content")
    os.makedirs(content, exist_ok=True)
    paths = file_paths(args.name, len(sizes), args.single_file)
    files = write_content(content, paths, sizes, args.seed)
    torrent_path = os.path.join(args.workdir, args.name + ".torrent")
    info = make_torrent(content, args.name, args.piece_length, torrent_path)
    info_hash = info.info_hashes().v1
    log(f"content written, infohash {info_hash}")

    endpoints = assign_ports(dht_ips + seeder_ips, args.port)
    node_endpoints, seeder_endpoints = endpoints[:len(dht_ips)], endpoints[len(dht_ips):]
    nodes = [make_session(ip, port, utp=args.utp) for ip, port in node_endpoints]
    for session in nodes:
        wait_listening(session, deadline)
    for i, session in enumerate(nodes):
        for j, node in enumerate(node_endpoints):
            if i != j:
                session.add_dht_node(node)
    counts = wait_routing_tables(nodes, min(len(nodes) - 1, 8), deadline)
    log(f"DHT routing tables: {counts}")
    dht_ready = time.monotonic() - started

    seeders = []
    seeder_settings = json.loads(args.seeder_settings) or [{}]
    for index, (ip, port) in enumerate(seeder_endpoints):
        extra = {"dht_announce_interval": 2, **seeder_settings[index % len(seeder_settings)]}
        session = make_session(ip, port, utp=args.utp,
                               utp_only=index < args.utp_only_seeders, extra=extra)
        wait_listening(session, deadline)
        for node in node_endpoints:
            session.add_dht_node(node)
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent_path)
        params.save_path = content
        params.flags = lt.torrent_flags.seed_mode
        session.add_torrent(params)
        seeders.append(session)

    want = {endpoint(ip, port) for ip, port in seeder_endpoints}
    found = lookup_until(nodes[0], info_hash, want, deadline)
    if not want <= found:
        raise TimeoutError(f"seeders not all found in the DHT: found {sorted(found)}")
    ready = time.monotonic() - started
    emit(
        "ready",
        dht_nodes=[endpoint(ip, port) for ip, port in node_endpoints],
        seeders=sorted(want),
        info_hash=str(info_hash),
        torrent=torrent_path,
        content_dir=content,
        name=args.name,
        piece_length=info.piece_length(),
        piece_count=info.num_pieces(),
        total_length=info.total_size(),
        files=files,
        dht_ready_s=round(dht_ready, 3),
        ready_s=round(ready, 3),
    )

    serve(nodes, list(zip(seeder_endpoints, seeders)))


def serve(nodes, seeders):
    """Answers commands; `seeders` pairs each seeder's (ip, port) with its
    session."""
    commands = stdin_commands()
    probe = nodes[0]
    while True:
        try:
            command = commands.get(timeout=0.5)
        except queue.Empty:  # idle: drain alerts so queues stay short
            for session in nodes + [s for _, s in seeders]:
                session.pop_alerts()
            continue
        if command is None:
            log("stdin closed, exiting")
            return
        kind = command.get("cmd")
        if kind == "get_peers":
            info_hash = lt.sha1_hash(bytes.fromhex(command["info_hash"]))
            want = set(command.get("want", []))
            deadline = time.monotonic() + 20
            if want:
                peers = lookup_until(probe, info_hash, want, deadline)
            else:
                peers = lookup(probe, info_hash, deadline)
            emit("peers", info_hash=command["info_hash"], peers=sorted(peers))
        elif kind == "add_node":
            host, _, port = command["addr"].rpartition(":")
            for session in nodes + [s for _, s in seeders]:
                session.add_dht_node((host.strip("[]"), int(port)))
            emit("node_added", addr=command["addr"])
        elif kind == "uploads":
            uploads = {}
            for (ip, port), session in seeders:
                uploads[endpoint(ip, port)] = sum(
                    h.status().total_payload_upload for h in session.get_torrents())
            emit("uploads", uploads=uploads)
        else:
            emit("error", message=f"unknown command {command!r}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report, then fail loudly
        emit("error", message=f"{type(e).__name__}: {e}")
        raise
