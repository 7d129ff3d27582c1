#!/usr/bin/python3
"""libtorrent seeders that know each other, for lodestone's PEX tests.

Run by crates/cli/tests/pex.rs inside a loopback-only network namespace.

1. Writes deterministic content and a v1 .torrent (as swarm.py does).
2. Starts one seeding session per --seeder-ips address, DHT off, with
   libtorrent's default ut_pex plugin, and connects the first seeder to the
   others. Seeders keep their connections to each other
   (close_redundant_connections off) so the first one has peers to tell of.
   The others open no connections of their own, so they do not dial each
   other once the first one's PEX names them all.
   With --ipv6-seeder, one more seeder listens on [::1] only.
3. Prints one "ready" event once the first seeder holds its connections.
4. Serves commands read from stdin, one JSON object per line:
     {"cmd": "stats"} -> {"event": "stats", "uploaded": {ADDR: BLOCKS}}
     {"cmd": "add_downloader", "ip": IP, "connect": "IP:PORT"}
         -> {"event": "downloader_added"}: a libtorrent downloader that
            knows only that one peer
     {"cmd": "downloader_peers"} -> {"event": "downloader_peers",
         "peers": [{"addr": "IP:PORT", "pex": BOOL}]}: its connected peers,
         and whether it learned each from PEX
   and exits when stdin closes.
"""

import argparse
import os
import time

import libtorrent as lt

from ltcommon import emit, limit_on_loopback, log, make_session, serve_commands, wait_listening
from swarm import file_paths, make_torrent, write_content


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--workdir", required=True)
    p.add_argument("--seeder-ips", required=True, help="comma-separated IPv4 addresses")
    p.add_argument("--ipv6-seeder", action="store_true", help="one more seeder on [::1] only")
    p.add_argument("--port", type=int, default=6881)
    p.add_argument("--file-size", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    return p.parse_args()


# No DHT: peers come from the test (x.pe) and from PEX only. Uploads are
# counted from block_uploaded alerts, which are posted as each block is sent
# (the status counters lag by up to a second).
SEEDER = {"enable_dht": False, "close_redundant_connections": False}

# Every seeder but the first accepts connections and opens none. Each
# learns the others from the first one's PEX, and would otherwise dial them
# all: with 30 seeders that mesh took about 6 CPU seconds, all of both
# cores for 3 s, in the middle of the benchmark's rounds.
LISTEN_ONLY = {"enable_outgoing_tcp": False}


def seeder_session(ip, port, extra=None):
    session = make_session(ip, port, extra={**SEEDER, **(extra or {})})
    mask = session.get_settings()["alert_mask"] | lt.alert.category_t.upload_notification
    session.apply_settings({"alert_mask": mask})
    return session


def seed(session, torrent_path, content):
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent_path)
    params.save_path = content
    params.flags = lt.torrent_flags.seed_mode
    return session.add_torrent(params)


def main():
    args = parse_args()
    deadline = time.monotonic() + args.timeout
    ips = [ip for ip in args.seeder_ips.split(",") if ip]
    content = os.path.join(args.workdir, "content")
    os.makedirs(content, exist_ok=True)
    files = write_content(content, file_paths("content", 1, True), [args.file_size], args.seed)
    torrent_path = os.path.join(args.workdir, "content.torrent")
    info = make_torrent(content, "content", 0, torrent_path)

    seeders = []  # (address text, session, handle)
    for i, ip in enumerate(ips):
        session = seeder_session(ip, args.port, extra=None if i == 0 else LISTEN_ONLY)
        wait_listening(session, deadline, dht=False)
        seeders.append((f"{ip}:{args.port}", session, seed(session, torrent_path, content)))
    if args.ipv6_seeder:
        session = seeder_session("::1", args.port, extra=LISTEN_ONLY)
        wait_listening(session, deadline, dht=False)
        seeders.append((f"[::1]:{args.port}", session, seed(session, torrent_path, content)))
    first = seeders[0][2]
    for ip in ips[1:]:
        first.connect_peer((ip, args.port))
    while len(first.get_peer_info()) < len(ips) - 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"first seeder holds {len(first.get_peer_info())} connections")
        time.sleep(0.05)
    log("first seeder connected to the others")
    emit(
        "ready",
        seeders=[addr for addr, _, _ in seeders],
        info_hash=str(info.info_hashes().v1),
        torrent=torrent_path,
        content_dir=content,
        files=files,
    )
    serve(args, seeders, torrent_path)


def serve(args, seeders, torrent_path):
    downloader = None
    sessions = [s for _, s, _ in seeders]
    uploaded = {addr: 0 for addr, _, _ in seeders}

    def drain():
        for addr, session, _ in seeders:
            for alert in session.pop_alerts():
                if isinstance(alert, lt.block_uploaded_alert):
                    uploaded[addr] += 1
        for session in sessions[len(seeders):]:
            session.pop_alerts()

    def handle(command):
        nonlocal downloader
        kind = command.get("cmd")
        if kind == "stats":
            drain()
            emit("stats", uploaded=uploaded)
        elif kind == "add_downloader":
            # Plaintext straight away: lodestone does not speak MSE, and
            # the fallback after a failed encrypted attempt takes seconds.
            # Slow, so that it stays connected to the seeders it learns of
            # instead of finishing at loopback speed.
            session = make_session(command["ip"], args.port,
                                   extra={"enable_dht": False, "out_enc_policy": 2,
                                          "download_rate_limit": 100_000})
            limit_on_loopback(session)
            wait_listening(session, time.monotonic() + 20, dht=False)
            params = lt.add_torrent_params()
            params.ti = lt.torrent_info(torrent_path)
            params.save_path = os.path.join(args.workdir, "downloader")
            handle = session.add_torrent(params)
            host, _, port = command["connect"].rpartition(":")
            handle.connect_peer((host, int(port)))
            downloader = handle
            sessions.append(session)
            emit("downloader_added")
        elif kind == "downloader_peers":
            peers = [
                {"addr": f"{p.ip[0]}:{p.ip[1]}", "pex": bool(p.source & lt.peer_info.pex)}
                for p in downloader.get_peer_info()
            ]
            emit("downloader_peers", peers=peers)
        else:
            emit("error", message=f"unknown command {command!r}")

    serve_commands(handle, drain)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report, then fail loudly
        emit("error", message=f"{type(e).__name__}: {e}")
        raise
