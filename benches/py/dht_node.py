#!/usr/bin/python3
"""A lone libtorrent DHT node, the rival of `lodestone node` in the benchmark.

Run by benches/scenarios inside a loopback-only network namespace. Configured
like the test harness's sessions (tests/py/ltcommon.py: private loopback DHT,
rate limits raised so a load generator is not banned, no LSD/UPnP/NAT-PMP),
but with alerts limited to errors: a bootstrap node under load should not
spend its time queueing one alert per incoming query for nobody to read.

Prints {"event": "ready", ...} once the session runs, then serves until stdin
closes.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tests", "py"))

import libtorrent as lt  # noqa: E402

from ltcommon import emit, log, make_session, parse_endpoint, stdin_commands  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, default=6881)
    p.add_argument("--bootstrap", default="", help="comma-separated IP:PORT DHT nodes")
    args = p.parse_args()

    session = make_session(args.ip, args.port, extra={
        "alert_mask": lt.alert.category_t.error_notification,
    })
    for node in filter(None, args.bootstrap.split(",")):
        session.add_dht_node(parse_endpoint(node))
    emit("ready", addr=f"{args.ip}:{args.port}", libtorrent=lt.__version__)

    commands = stdin_commands()
    while commands.get() is not None:
        session.pop_alerts()
    log("stdin closed, exiting")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        emit("error", message=f"{type(e).__name__}: {e}")
        raise
