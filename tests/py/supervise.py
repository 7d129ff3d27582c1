#!/usr/bin/python3
"""Runs one program for lodestone's tests and ties its life to our stdin.

Usage: supervise.py PROGRAM [ARGS...]

Prints {"event": "started", "pid": N}, forwards the program's stdout and
stderr to our stderr (our stdout carries only JSON events), and:
  * when stdin closes (the Rust handle was dropped, or the test process
    died), terminates the program (SIGTERM, then SIGKILL after 5 s);
  * when the program exits by itself, prints {"event": "exited", "code": N}
    and exits with the same code.
aria2c and transmission-cli do not watch stdin themselves; without this a
killed test could leave them running inside the namespace.
"""

import ctypes
import json
import signal
import subprocess
import sys
import threading


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def die_with_parent():
    """In the child: SIGKILL when the supervisor dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL,
                             stdout=sys.stderr, stderr=sys.stderr,
                             preexec_fn=die_with_parent)
    emit("started", pid=child.pid)

    def watch_stdin():
        for _ in sys.stdin:
            pass
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()

    threading.Thread(target=watch_stdin, daemon=True).start()
    code = child.wait()
    emit("exited", code=code)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
