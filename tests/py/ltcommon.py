"""Shared pieces of the libtorrent driver scripts used by lodestone's tests.

Every script talks to its Rust wrapper the same way: one JSON object per line
on stdout (each has an "event" key), diagnostics on stderr, and it exits when
stdin reaches EOF. The wrapper never sleeps to synchronise: it waits for an
event line with a deadline.

Sessions are configured for a private DHT on loopback addresses: no public
routers, no LSD/UPnP/NAT-PMP, loopback addresses accepted in routing tables
and search results, rate limits raised so a fast local peer is not banned,
plaintext peer connections allowed.
"""

import json
import queue
import sys
import threading
import time

import libtorrent as lt

_emit_lock = threading.Lock()
_start = time.monotonic()


def elapsed():
    """Seconds since the script started (monotonic)."""
    return round(time.monotonic() - _start, 4)


def emit(event, **fields):
    """Writes one JSON event line to stdout and flushes it."""
    fields = {"event": event, "t": elapsed(), **fields}
    with _emit_lock:
        sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
        sys.stdout.flush()


def log(*parts):
    """Diagnostics for humans; the Rust side forwards stderr with a prefix."""
    print(f"[{elapsed():8.3f}]", *parts, file=sys.stderr, flush=True)


def parse_endpoint(text):
    """'127.0.0.1:6881' -> ('127.0.0.1', 6881)."""
    host, _, port = text.rpartition(":")
    return host, int(port)


def make_session(ip, port, utp=False, extra=None, utp_only=False, plugins=True):
    """A libtorrent session listening on ip:port (TCP and the DHT's UDP),
    and only there: an IPv6 `ip` (like "::1") makes an IPv6-only session.
    `utp`: uTP as well as TCP; `utp_only`: uTP and no TCP at all.
    `plugins` false leaves out libtorrent's default plugins (ut_pex,
    ut_metadata, smart_ban); what the peer connection does itself (BEP 10,
    ut_holepunch) stays."""
    utp = utp or utp_only
    host = f"[{ip}]" if ":" in ip else ip
    settings = {
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": ip,
        "enable_dht": True,
        # Never talk to public routers: we wire nodes with add_dht_node.
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "enable_incoming_utp": utp,
        "enable_outgoing_utp": utp,
        "enable_incoming_tcp": not utp_only,
        "enable_outgoing_tcp": not utp_only,
        # Loopback peers share a /24 and look "dark"; accept them anyway.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        # A fast local client must not be rate limited or banned.
        "dht_block_ratelimit": 100000,
        "dht_upload_rate_limit": 100000000,
        "allow_multiple_connections_per_ip": True,
        "listen_system_port_fallback": False,
        # Plaintext allowed both ways (pe_enabled = 1).
        "in_enc_policy": 1,
        "out_enc_policy": 1,
        "allowed_enc_level": 3,
        "user_agent": "lodestone-test-harness",
        "alert_mask": (
            lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.dht_notification
            | lt.alert.category_t.dht_operation_notification
            | lt.alert.category_t.storage_notification
            | lt.alert.category_t.connect_notification
            | lt.alert.category_t.peer_notification
        ),
        "alert_queue_size": 100000,
    }
    if extra:
        settings.update(extra)
    # The binding's second argument is the session flags; 0 drops
    # add_default_plugins.
    return lt.session(settings) if plugins else lt.session(settings, 0)


def wait_listening(session, deadline, dht=True):
    """Until the session's sockets are open and, with `dht`, its DHT runs: a
    ping sent to a node that is not listening yet is lost, and libtorrent
    retries only seconds later."""
    listening = False
    while not (listening and (not dht or session.is_dht_running())):
        if time.monotonic() > deadline:
            raise TimeoutError("libtorrent session did not start listening")
        if session.wait_for_alert(100):
            for alert in session.pop_alerts():
                if isinstance(alert, lt.listen_failed_alert):
                    raise RuntimeError(alert.message())
                listening |= isinstance(alert, lt.listen_succeeded_alert)


def dht_node_count(session, timeout=0.25):
    """Nodes in the session's DHT routing table, or None if no stats came
    within `timeout` seconds (the DHT may not be running yet: ask again)."""
    session.post_dht_stats()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not session.wait_for_alert(int(timeout * 1000)):
            continue
        for alert in session.pop_alerts():
            if isinstance(alert, lt.dht_stats_alert):
                return sum(b["num_nodes"] for b in alert.routing_table)
    return None


def run(main):
    """Runs a driver's `main`; an exception is reported as an "error" event
    for the Rust side, then raised, so the script fails loudly."""
    try:
        main()
    except Exception as e:
        emit("error", message=f"{type(e).__name__}: {e}")
        raise


def limit_on_loopback(session):
    """Makes the session's rate limits apply to loopback peers too:
    libtorrent exempts local networks through its "local" peer class, so
    every address is put in the global class only."""
    everyone = lt.ip_filter()
    everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    session.set_peer_class_filter(everyone)


def serve_commands(on_command, on_idle):
    """Calls `on_command` with each JSON command read from stdin, and
    `on_idle` every half second without one (to drain alert queues), until
    stdin closes."""
    commands = stdin_commands()
    while True:
        try:
            command = commands.get(timeout=0.5)
        except queue.Empty:
            on_idle()
            continue
        if command is None:
            log("stdin closed, exiting")
            return
        on_command(command)


def stdin_commands():
    """A queue of JSON commands read from stdin; None is queued at EOF.

    EOF is the wrapper's signal to exit (it closes stdin on drop)."""
    commands = queue.Queue()

    def run():
        try:
            for line in sys.stdin:
                line = line.strip()
                if not line:
                    continue
                try:
                    commands.put(json.loads(line))
                except ValueError:
                    log("ignoring non-JSON command:", line)
        finally:
            commands.put(None)

    threading.Thread(target=run, daemon=True).start()
    return commands
