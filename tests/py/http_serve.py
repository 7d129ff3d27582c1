#!/usr/bin/env python3
"""Serves a directory over plain HTTP for the tests, with the standard
library's server and nothing else.

usage: http_serve.py DIRECTORY IP

Listens on IP at a port the system picks, prints one JSON line
{"event": "ready", "port": N} once it accepts connections, and exits when
its stdin closes. Requests are logged on stderr.
"""

import functools
import http.server
import json
import sys
import threading


def main():
    directory, ip = sys.argv[1], sys.argv[2]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    server = http.server.ThreadingHTTPServer((ip, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"event": "ready", "port": server.server_address[1]}), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
