"""Helper processes: start one in a node, wait (bounded) for its ready line, and make sure
it is gone afterwards. The one way labkit starts a server that a client then talks to.

A server that prints its ready line once it listens lets the caller go on at once, and a
server that dies first (port taken, module missing, wrong kernel) is reported with its
own last words instead of a client's "connection refused" later. As in the kernel's
selftests (lib/py's bkg with a ready fd), the waiting has a deadline and the process is
killed when its context ends, pass or fail, and at interpreter exit if a caller forgot.

The process is started through `spawner.popen` (a lab Node: its host decides where the
process runs, here or in a VM), so this module needs nothing above base/. The ready line
is read from the pipe's fd (select + os.read), so a helper that hangs or writes garbage
without a newline cannot block the caller past the deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from labkit.base.wait import Timeout, wait_until
from labkit.errors import LabkitError

MAX_BEFORE_READY = 1 << 16  # bytes a helper may write before its ready line
TAIL_LINES = 20  # lines of error output kept on a failure
STOP_GRACE = 5.0  # s between SIGTERM and SIGKILL


class Spawner(Protocol):
    """Anything that starts a process where it belongs (labkit.lab.Node does)."""

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]: ...


class HelperFailed(LabkitError):
    """The helper did not become ready: it ended first, said something else, or the
    deadline passed. `said` is what it wrote on its ready stream, `tail` the last lines of
    its error output."""

    def __init__(self, message: str, *, hint: str = "", said: str = "",
                 tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.said = said
        self.tail = tail


_live: set[subprocess.Popen[Any]] = set()
_live_lock = threading.Lock()


def _track(proc: subprocess.Popen[Any], on: bool) -> None:
    with _live_lock:
        (_live.add if on else _live.discard)(proc)


@atexit.register
def _kill_leftovers() -> None:
    """A helper whose context never ended (an interpreter exiting mid-way) dies with us."""
    with _live_lock:
        left = list(_live)
    for proc in left:
        kill(proc, grace=1.0)


def kill(proc: subprocess.Popen[Any], grace: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL after `grace` s; reaped, its pipes closed. Idempotent."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
    _track(proc, False)


class Helper:
    """A started helper: `proc` (its pipes still open after the ready line), `line` (the
    ready line) and `early` (what it wrote after that line in the same read). A context
    manager: leaving it stops the process."""

    def __init__(self, proc: subprocess.Popen[Any], what: str, line: str,
                 early: str) -> None:
        self.proc, self.what, self.line, self.early = proc, what, line, early

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, grace: float = STOP_GRACE) -> None:
        kill(self.proc, grace)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def finish(self, timeout: float) -> tuple[Any, Any]:
        """Wait (bounded) for it to end by itself; (stdout, stderr) after the ready line.
        Killed at the deadline: then whatever it wrote until then."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(self.proc, 1.0)
            out, err = self.proc.communicate()
        _track(self.proc, False)
        return out, err


def start(spawner: Spawner, argv: Sequence[str], *, what: str,
          ready: str | Callable[[str], bool] = "ready",
          on: Literal["stdout", "stderr"] = "stdout", timeout: float = 60.0,
          probe: Callable[[], bool] | None = None, hint: str = "", **popen: Any) -> Helper:
    """Start argv through spawner.popen and wait up to `timeout` s for its ready line on
    `on`: a line containing the word `ready`, or one the callable accepts. For a tool that
    prints no such line (iperf3), `probe` instead: ready once probe() is true (e.g. its
    port listens), polled through labkit.base.wait.

    HelperFailed (its process already gone) names `what` ("the traffic server on h2") and
    why: its last line of error output when it ended or said something else first, the
    deadline when it stayed silent. Use the result as a context manager.
    """
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    proc = spawner.popen(list(argv), **popen)
    _track(proc, True)
    accept = ready if callable(ready) else (lambda text: ready in text)
    try:
        if probe is not None:
            line, early, said, why = _await_probe(proc, probe, timeout)
        else:
            stream = proc.stdout if on == "stdout" else proc.stderr
            if stream is None:
                raise ValueError(f"start() reads the ready line on {on}: it must be a pipe")
            line, early, said, why = _await(stream.fileno(), accept, timeout)
    except BaseException:
        kill(proc, 1.0)
        raise
    if line is not None:
        return Helper(proc, what, line, early)
    kill(proc, 1.0)
    tail = _tail(proc, said if on == "stderr" and probe is None else None)
    if why == "eof" or proc.returncode not in (None, -15, -9):
        reason = f"it exited with status {proc.returncode} before its ready line"
    elif why == "garbage":
        reason = f"it wrote {len(said)} bytes without a ready line"
    elif why == "deadline":
        reason = (f"not ready within {timeout:g} s" if probe is not None
                  else f"no ready line within {timeout:g} s")
    else:
        reason = "its first line was not a ready line"
    last = tail.splitlines()[-1].strip().rstrip(".") if tail.strip() else ""
    if not last and why == "other":
        last = said.strip().splitlines()[-1].strip()[:500] if said.strip() else ""
    message = f"{what} did not start: {last or reason}"
    if last and why == "deadline":
        message += f" ({reason})"
    raise HelperFailed(message + ".", hint=hint, said=said, tail=tail)


def _await(fd: int, accept: Callable[[str], bool], timeout: float
           ) -> tuple[str | None, str, str, str]:
    """(ready line or None, what followed it, everything read, why it stopped): reads
    lines until one is accepted, EOF ("eof", or "other" after lines that were not ready),
    too much text ("garbage") or the deadline ("deadline")."""
    buf = b""
    pos = 0  # start of the first line not yet judged
    deadline = time.monotonic() + timeout
    while True:
        while (end := buf.find(b"\n", pos)) >= 0:
            text = buf[pos:end].decode(errors="replace")
            pos = end + 1
            if accept(text):
                return text, buf[pos:].decode(errors="replace"), \
                    buf.decode(errors="replace"), ""
        if len(buf) > MAX_BEFORE_READY:
            return None, "", buf.decode(errors="replace"), "garbage"
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "", buf.decode(errors="replace"), "deadline"
        if not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 65536)
        if chunk:
            buf += chunk
            continue
        said = buf.decode(errors="replace")
        last = buf[pos:].decode(errors="replace")
        if last.strip() and accept(last):  # a ready line without its newline, then EOF
            return last, "", said, ""
        return None, "", said, "other" if buf.strip() else "eof"


def _await_probe(proc: subprocess.Popen[Any], probe: Callable[[], bool], timeout: float
                 ) -> tuple[str | None, str, str, str]:
    """Like _await, with readiness seen from outside: probe() true ("" as the line), the
    process ending first ("eof") or the deadline ("deadline")."""
    def state() -> str:
        if probe():
            return "ready"
        return "ended" if proc.poll() is not None else ""

    try:
        got = wait_until(state, timeout, "the helper to be ready")
    except Timeout:
        return None, "", "", "deadline"
    return ("", "", "", "") if got == "ready" else (None, "", "", "eof")


def _tail(proc: subprocess.Popen[Any], said: str | None) -> str:
    """The last lines of its error output (already read when that was the ready stream;
    the process is gone, so what is left in the pipe is bounded)."""
    text = said or ""
    if said is None and proc.stderr is not None:
        try:
            raw = _read_rest(proc.stderr.fileno(), 2.0)
        except OSError:
            raw = b""
        text = raw.decode(errors="replace")
    lines = [x for x in text.splitlines() if x.strip()]
    return "\n".join(lines[-TAIL_LINES:])


def _read_rest(fd: int, timeout: float, limit: int = 1 << 20) -> bytes:
    """What is left in a pipe, until EOF, `limit` bytes or `timeout` s."""
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < limit:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out[-limit:]
