#!/usr/bin/python3
"""An unreachable uTP-only libtorrent seeder and a reachable relay, for
lodestone's holepunch (BEP 55) tests.

Run by crates/cli/tests/holepunch.rs inside a loopback-only network
namespace whose firewall drops new inbound connections to the seeder.

1. Writes deterministic content and a v1 .torrent (as swarm.py does).
2. Starts the seeder S on --seeder-ip: uTP only, DHT off, without
   libtorrent's ut_pex plugin, seeding.
3. Starts the relay R on --relay-ip: TCP and uTP, DHT off, the torrent
   added in upload mode with no data, so it never downloads and has nothing
   to upload: whatever a downloader gets came from S.
4. S dials R (an outgoing connection, which the firewall lets through);
   prints one "ready" event once R holds that connection.
5. Serves commands read from stdin, one JSON object per line:
     {"cmd": "stats"} -> {"event": "stats", "uploaded": {ADDR: BLOCKS},
         "relay_peers": [ADDR]}: blocks S uploaded to each peer (by the
         peer's address as S sees it), and R's connected peers
     {"cmd": "seeder_connect", "addr": "IP:PORT"} -> {"event":
         "seeder_connecting"}: S dials that peer too (through the firewall,
         as it is outgoing)
     {"cmd": "add_initiator", "ip": IP, "connect": "IP:PORT"} ->
         {"event": "initiator_added"}: a slow uTP-only libtorrent
         downloader that knows only that one peer, so that it is still
         downloading when its holepunch to S succeeds
     {"cmd": "initiator_peers"} -> {"event": "initiator_peers",
         "peers": [ADDR], "connecting": [ADDR]}: its peers past the
         BitTorrent handshake, and those it is still connecting to
   and exits when stdin closes.
"""

import argparse
import os
import time

import libtorrent as lt

from ltcommon import (emit, limit_on_loopback, log, make_session, run, serve_commands,
                      wait_listening)
from swarm import file_paths, make_torrent, write_content


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--workdir", required=True)
    p.add_argument("--seeder-ip", required=True)
    p.add_argument("--relay-ip", required=True)
    p.add_argument("--port", type=int, default=6881)
    p.add_argument("--file-size", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    return p.parse_args()


# No DHT: peers come from the test (x.pe), PEX and holepunching only.
# Redundant connections (seed to upload-only) are kept: the relay must stay
# connected to the seeder to introduce it.
COMMON = {"enable_dht": False, "close_redundant_connections": False}


def add(session, torrent_path, save_path, flags):
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent_path)
    params.save_path = save_path
    params.flags = flags
    return session.add_torrent(params)


def main():
    args = parse_args()
    deadline = time.monotonic() + args.timeout
    content = os.path.join(args.workdir, "content")
    os.makedirs(content, exist_ok=True)
    files = write_content(content, file_paths("content", 1, True), [args.file_size], args.seed)
    torrent_path = os.path.join(args.workdir, "content.torrent")
    info = make_torrent(content, "content", 0, torrent_path)

    # Without ut_pex the seeder cannot learn a downloader from the relay and
    # dial it by itself: a connection between them must be holepunched.
    seeder = make_session(args.seeder_ip, args.port, utp_only=True, extra=COMMON, plugins=False)
    mask = seeder.get_settings()["alert_mask"] | lt.alert.category_t.upload_notification
    seeder.apply_settings({"alert_mask": mask})
    wait_listening(seeder, deadline, dht=False)
    seeding = add(seeder, torrent_path, content, lt.torrent_flags.seed_mode)

    relay = make_session(args.relay_ip, args.port, utp=True, extra=COMMON)
    wait_listening(relay, deadline, dht=False)
    empty = os.path.join(args.workdir, "relay")
    relaying = add(relay, torrent_path, empty, lt.torrent_flags.upload_mode)

    seeding.connect_peer((args.relay_ip, args.port))
    while not relaying.get_peer_info():
        if time.monotonic() > deadline:
            raise TimeoutError("the seeder never connected to the relay")
        time.sleep(0.05)
    log("seeder connected to the relay")
    emit(
        "ready",
        seeder=f"{args.seeder_ip}:{args.port}",
        relay=f"{args.relay_ip}:{args.port}",
        info_hash=str(info.info_hashes().v1),
        torrent=torrent_path,
        content_dir=content,
        files=files,
    )
    serve(args, seeder, relay, (seeding, relaying), torrent_path)


def serve(args, seeder, relay, handles, torrent_path):
    seeding, relaying = handles
    uploaded = {}
    initiator = None
    extra_sessions = []

    def drain():
        for alert in seeder.pop_alerts():
            if isinstance(alert, lt.block_uploaded_alert):
                ip, port = alert.endpoint
                key = f"{ip}:{port}"
                uploaded[key] = uploaded.get(key, 0) + 1
            elif isinstance(alert, (lt.peer_connect_alert, lt.peer_disconnected_alert,
                                    lt.peer_error_alert)):
                log("seeder:", alert.message())
        for session in [relay, *extra_sessions]:
            for alert in session.pop_alerts():
                if isinstance(alert, (lt.peer_connect_alert, lt.peer_disconnected_alert)):
                    log("relay/initiator:", alert.message())

    def handle(command):
        nonlocal initiator
        kind = command.get("cmd")
        if kind == "stats":
            drain()
            peers = [f"{p.ip[0]}:{p.ip[1]}" for p in relaying.get_peer_info()]
            emit("stats", uploaded=uploaded, relay_peers=peers)
        elif kind == "seeder_connect":
            host, _, port = command["addr"].rpartition(":")
            seeding.connect_peer((host, int(port)))
            emit("seeder_connecting")
        elif kind == "add_initiator":
            # It redials S soon after each failure (libtorrent waits a
            # minute by default): each failed dial is a new occasion to ask
            # for a rendezvous, and under load the first ones may not be.
            session = make_session(command["ip"], args.port, utp_only=True,
                                   extra={**COMMON, "download_rate_limit": 100_000,
                                          "min_reconnect_time": 2, "max_failcount": 20})
            limit_on_loopback(session)
            wait_listening(session, time.monotonic() + 20, dht=False)
            initiator = add(session, torrent_path, os.path.join(args.workdir, "initiator"),
                            lt.add_torrent_params().flags)
            host, _, port = command["connect"].rpartition(":")
            initiator.connect_peer((host, int(port)))
            extra_sessions.append(session)
            emit("initiator_added")
        elif kind == "initiator_peers":
            pending = lt.peer_info.connecting | lt.peer_info.handshake
            peers, connecting = [], []
            for p in initiator.get_peer_info():
                (connecting if p.flags & pending else peers).append(f"{p.ip[0]}:{p.ip[1]}")
            emit("initiator_peers", peers=peers, connecting=connecting)
        else:
            emit("error", message=f"unknown command {command!r}")

    serve_commands(handle, drain)


if __name__ == "__main__":
    run(main)
