#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal of a chosen size, as a user would.

usage: on_terminal.py COLUMNS WAIT_REGEX TIMEOUT_SECS -- COMMAND [ARG]...

Reads what the command draws until WAIT_REGEX matches the output with its
escape sequences removed, then types Ctrl-C and reads on until the command
exits. Prints one JSON object on stdout:
  {"output": everything the terminal received, "matched": bool,
   "status": exit code, or minus the signal that ended it,
   "timed_out": bool}
Nothing here sleeps: every wait is a select() on the terminal with a deadline.
"""

import fcntl
import json
import os
import re
import select
import signal
import struct
import sys
import termios
import time

ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def main():
    columns, wait_regex, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    assert sys.argv[4] == "--", "usage: on_terminal.py COLUMNS WAIT_REGEX TIMEOUT_SECS -- COMMAND..."
    command = sys.argv[5:]
    wanted = re.compile(wait_regex.encode())

    # The size is set before the command starts, so its first look sees it.
    fd, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    # No echo: the "^C" a terminal echoes would land in the middle of a line.
    attributes = termios.tcgetattr(terminal)
    attributes[3] &= ~termios.ECHO
    termios.tcsetattr(terminal, termios.TCSANOW, attributes)
    pid = os.fork()
    if pid == 0:
        os.close(fd)
        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
        for stream in (0, 1, 2):
            os.dup2(terminal, stream)
        os.environ["TERM"] = "xterm"
        os.execvp(command[0], command)
    os.close(terminal)

    deadline = time.monotonic() + timeout
    output = b""
    matched = False
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the command and its terminal are gone
            break
        if not chunk:
            break
        output += chunk
        if not matched and wanted.search(ESCAPE.sub(b"", output)):
            matched = True
            os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    print(json.dumps({
        "output": output.decode("utf-8", "replace"),
        "matched": matched,
        "status": code,
        "timed_out": timed_out,
    }))


if __name__ == "__main__":
    main()
