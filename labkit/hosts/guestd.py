"""labkit's daemon inside a lab VM: runs @remote functions for the host, one JSON line in,
one JSON line out, on a unix socket the VM's agent relays to.

Why a daemon: under TCG emulation a Python import costs ~35x the host's, so a Python
process per request would make every `labkit tipc status` slow. The daemon imports the
build path once at start, then serves each connection in a thread; each request imports
what it needs on first use (a lab's own features only, via the topology loader).

Started by the host (VmHost.start) as `python -m labkit.hosts.guestd --detach`: the
foreground process returns "ready" once the socket accepts connections. The imports then
go on in the background (a call that needs a module meanwhile imports it itself), so a
VM is usable seconds after boot rather than after every import. What later verbs need
(checks) is imported only once the host has left the daemon quiet for a while: during
a cold `up` the daemon has about one emulated CPU, and the build must not share it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any

from labkit.errors import UsageError
from labkit.hosts.rpc import remote

# The package whose labs this daemon serves: imported at start, it registers how a lab
# name becomes a lab (labkit.hosts.rpc.serve_labs_with); this layer never imports it.
LABS = "labkit.lab"
# What building a lab needs comes first: the host's first request is that build, and it
# waits for these imports. The verifications follow once the daemon is quiet.
PRELOAD = ("labkit.lab.guest", "labkit.lab.ops")
PRELOAD_LATER = ("labkit.verify.checks",)
# Seconds without a request before PRELOAD_LATER: longer than the host's pauses between
# the calls of one `up` (guest_up, then guest_wait), so that the build and the wait for
# its links do not share the emulated CPU with imports they do not need (issue 18).
QUIET = 3.0
# Requests being served, and when the last one ended (the daemon's start at first).
_serving = 0
_last_end = time.monotonic()
_idle = threading.Condition()


@remote
def ping() -> str:
    """The host's check that this daemon serves (a reused VM may have lost it)."""
    return "pong"


@remote
def install() -> str:
    """Which labkit install this daemon runs (its python): a VM is reused only by labs of
    the same install, since the processes it starts run this install's code."""
    return sys.executable


def preload(quiet: float = QUIET) -> None:
    """PRELOAD now, then each of PRELOAD_LATER once no request came for `quiet` seconds."""
    for module in PRELOAD:
        importlib.import_module(module)
    for module in PRELOAD_LATER:
        _wait_quiet(quiet)
        importlib.import_module(module)


def _wait_quiet(quiet: float) -> None:
    with _idle:
        while True:
            left = _last_end + quiet - time.monotonic()
            if _serving == 0 and left <= 0:
                return
            _idle.wait(timeout=left if _serving == 0 else None)


def _busy(delta: int) -> None:
    global _serving, _last_end
    with _idle:
        _serving += delta
        _last_end = time.monotonic()
        _idle.notify_all()


def handle(line: bytes) -> bytes:
    from labkit.hosts import rpc

    start, path = time.monotonic(), "?"
    _busy(+1)
    try:
        path, lab, args, kwargs = rpc.parse_request(line)
        result = rpc.call_here(path, lab, args, kwargs)
        reply: dict[str, Any] = {"ok": result}
    except BaseException as exc:  # every failure goes back to the host as a value
        if not _is_labkit_error(exc):
            import traceback  # only for a bug: the daemon starts without it

            traceback.print_exc(file=sys.stderr)
        reply = {"error": rpc.encode_error(exc)}
    finally:
        _busy(-1)
    # the guest-side seconds of this request: the host's trace and this daemon's log show
    # where emulated time goes, verb by verb
    reply["took"] = round(time.monotonic() - start, 3)
    print(f"guestd: {path} {reply['took']:.3f} s", file=sys.stderr, flush=True)
    try:
        return json.dumps(reply, default=str).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        return json.dumps({"error": rpc.encode_error(exc)}).encode() + b"\n"


def _is_labkit_error(exc: BaseException) -> bool:
    from labkit.errors import LabkitError

    return isinstance(exc, LabkitError)


def serve_conn(conn: socket.socket) -> None:
    """Answer each request line; a line past rpc.MAX_MESSAGE gets an error and the end of
    the connection (its rest cannot be told from the next request)."""
    from labkit.hosts import rpc

    with conn, conn.makefile("rb") as reader:
        while True:
            try:
                line = rpc.read_message(reader, "request")
            except UsageError as exc:
                conn.sendall(json.dumps({"error": rpc.encode_error(exc)}).encode() + b"\n")
                return
            if not line:
                return
            conn.sendall(handle(line))


def serve(path: str, ready_fd: int | None) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(16)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labkit.hosts.guestd")
    ap.add_argument("--socket", default="/run/labkit/guestd.sock")
    ap.add_argument("--detach", action="store_true",
                    help="run in the background; print 'ready' once serving")
    ap.add_argument("--log", default="/run/labkit/guestd.log")
    ap.add_argument("--labs", default=LABS, help="the package that rebuilds labs by name")
    args = ap.parse_args(argv)
    importlib.import_module(args.labs)
    if not args.detach:
        threading.Thread(target=preload, daemon=True).start()
        serve(args.socket, None)
        return 0
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:  # the foreground: report when the daemon serves
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as fh:
            answer = fh.read()
        sys.stdout.write(answer.decode() or "failed\n")
        return 0 if answer.startswith(b"ready") else 1
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.makedirs(os.path.dirname(args.log), mode=0o700, exist_ok=True)
    log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        threading.Thread(target=preload, daemon=True).start()
        serve(args.socket, write_fd)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
