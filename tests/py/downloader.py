#!/usr/bin/python3
"""A libtorrent downloader for lodestone's tests and benchmarks.

Run by lodestone_tests::clients::LibtorrentDownloader inside a loopback-only
network namespace. Joins the DHT through --bootstrap nodes (add_dht_node),
adds a magnet link or a .torrent and reports progress as JSON event lines:

  {"event": "started", "info_hash": HEX}
  {"event": "peer", "addr": "IP:PORT"}          first connection to each peer
  {"event": "metadata", "t": S}                  info dict received (magnets)
  {"event": "finished", "t": S, "total_length": N}
  {"event": "error", "message": TEXT}

"t" is seconds since the script started. After "finished" it keeps seeding
until stdin closes (or exits at once with --exit-when-done).
"""

import argparse
import json
import queue
import time

import libtorrent as lt

from ltcommon import emit, log, make_session, parse_endpoint, stdin_commands, wait_listening


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, default=6881)
    p.add_argument("--bootstrap", default="", help="comma-separated IP:PORT DHT nodes")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--magnet")
    source.add_argument("--torrent")
    p.add_argument("--save-path", required=True)
    p.add_argument("--utp", action="store_true")
    p.add_argument("--utp-only", action="store_true", help="uTP and no TCP at all")
    p.add_argument("--no-dht", action="store_true", help="peers only from the magnet's x.pe")
    p.add_argument("--exit-when-done", action="store_true")
    p.add_argument("--settings", default="{}", help="JSON dict of extra libtorrent settings")
    return p.parse_args()


def main():
    args = parse_args()
    session = make_session(args.ip, args.port, utp=args.utp, utp_only=args.utp_only,
                           extra={"enable_dht": not args.no_dht, **json.loads(args.settings)})
    if not args.no_dht:
        wait_listening(session, time.monotonic() + 30)
    for node in filter(None, args.bootstrap.split(",")):
        session.add_dht_node(parse_endpoint(node))

    if args.magnet:
        params = lt.parse_magnet_uri(args.magnet)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_path
    handle = session.add_torrent(params)
    emit("started", info_hash=str(handle.info_hashes().v1))

    commands = stdin_commands()
    seen_peers = set()
    finished = False
    flushed = False
    while True:
        try:
            if commands.get_nowait() is None:
                log("stdin closed, exiting")
                return
        except queue.Empty:
            pass
        session.wait_for_alert(200)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.metadata_received_alert):
                emit("metadata")
            elif isinstance(alert, lt.torrent_finished_alert) and not finished:
                # libtorrent hashes pieces from its write buffers and may
                # report them done before they reach the files: flush, and
                # say "finished" once the files hold every byte.
                finished = True
                handle.flush_cache()
            elif isinstance(alert, lt.cache_flushed_alert) and finished and not flushed:
                flushed = True
                status = handle.status()
                emit("finished", total_length=status.total_wanted)
                if args.exit_when_done:
                    return
            elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert,
                                    lt.metadata_failed_alert)):
                emit("error", message=alert.message())
        # Polled rather than taken from alerts: covers dialled and accepted peers.
        for peer in handle.get_peer_info():
            addr = f"{peer.ip[0]}:{peer.ip[1]}"
            if addr not in seen_peers and not peer.flags & lt.peer_info.connecting:
                seen_peers.add(addr)
                emit("peer", addr=addr)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        emit("error", message=f"{type(e).__name__}: {e}")
        raise
