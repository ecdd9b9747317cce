"""Calls that run next to a lab's kernel: which functions may be called, and how calls,
results and errors travel as JSON lines.

A lab in a VM is driven from the host: argument checking and presentation stay here,
kernel-facing work runs in the VM's guest daemon (labkit.hosts.guestd). Only functions
marked @remote can be called that way, and only JSON crosses: a guest (whose labs may
replay untrusted packets) can never make the host run code. For a local lab the same
functions are called in-process, so both paths run the same code.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from labkit import errors
from labkit.errors import LabkitError, Loc

F = TypeVar("F", bound=Callable[..., Any])

REMOTE: set[str] = set()
# How a call that names a lab gets the lab as seen from this kernel: registered by the lab
# layer when it is imported (labkit.lab.dispatch), since this layer never imports it.
_LAB_OF: Callable[[str], Any] | None = None
# The longest request or reply line: a call's arguments and result are small JSON values
# (the largest, a lab's state with its topology source, stays below 4 MiB). A peer that
# sends more, or never a newline, is refused before it can fill this side's memory.
MAX_MESSAGE = 16 * 1024 * 1024


def remote(fn: F) -> F:
    """Allow fn to be called next to the kernel by its path "module:name".

    fn(lab, *args) gets the lab as seen from that kernel (labkit.lab.lab.Lab) when
    `lab` is its first parameter's name; arguments and result are JSON values.
    """
    REMOTE.add(f"{fn.__module__}:{fn.__qualname__}")
    return fn


def path_of(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    if not module.startswith("labkit.") or not name:
        raise LabkitError(f"refusing to call {path!r} in the VM: not a labkit function.")
    mod = importlib.import_module(module)
    if path not in REMOTE:
        raise LabkitError(f"refusing to call {path!r} in the VM: it is not marked @remote.")
    fn = mod
    for part in name.split("."):
        fn = getattr(fn, part)
    return fn  # type: ignore[return-value]


def takes_lab(fn: Callable[..., Any]) -> bool:
    code = getattr(fn, "__code__", None)
    return bool(code and code.co_argcount and code.co_varnames[0] == "lab")


def serve_labs_with(lab_of: Callable[[str], Any]) -> None:
    """Register how a lab name becomes the lab object a @remote function takes."""
    global _LAB_OF
    _LAB_OF = lab_of


def call_here(path: str, lab: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run the @remote function `path` in this process: with the lab first if it takes
    one (a lab object is passed as it is, a name is rebuilt by the registered lab layer)."""
    fn = resolve(path)
    if not takes_lab(fn):
        return fn(*args, **kwargs)
    if lab is None or isinstance(lab, str):
        if _LAB_OF is None:
            raise LabkitError(f"{path} needs a lab, and no lab layer is loaded here.",
                              hint="Import labkit.lab (the guest daemon does so at start).")
        lab = _LAB_OF(str(lab))
    return fn(lab, *args, **kwargs)


def request(fn: str, lab: str | None, args: list[Any], kwargs: dict[str, Any]) -> bytes:
    return json.dumps({"fn": fn, "lab": lab, "args": args, "kwargs": kwargs}).encode() + b"\n"


def read_message(reader: Any, what: str) -> bytes:
    """One JSON line from reader (a binary file), b"" at the end; UsageError for a line
    longer than MAX_MESSAGE (then the stream cannot be framed: the caller closes it)."""
    line: bytes = reader.readline(MAX_MESSAGE + 1)
    if len(line) > MAX_MESSAGE:
        raise errors.UsageError(f"refusing a {what} longer than {MAX_MESSAGE // 2**20} MiB "
                                "(or one without its newline).",
                                hint="Send one JSON object per line.")
    return line


def parse_request(line: bytes) -> tuple[str, str | None, list[Any], dict[str, Any]]:
    """fn, lab, args and kwargs of a request line; UsageError naming what is malformed."""
    try:
        req = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise errors.UsageError(f"refusing a request that is not JSON ({exc}).",
                                hint="Send one JSON object per line.") from None
    if not isinstance(req, dict) or not isinstance(req.get("fn"), str):
        raise errors.UsageError("refusing a request that is not a JSON object with a "
                                "\"fn\" string.",
                                hint='Send {"fn": "labkit.module:function", "lab": NAME, '
                                     '"args": [...], "kwargs": {...}}.')
    lab, args, kwargs = req.get("lab"), req.get("args") or [], req.get("kwargs") or {}
    if not (lab is None or isinstance(lab, str)) or not isinstance(args, list) or \
            not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise errors.UsageError("refusing a request whose lab, args or kwargs have the "
                                "wrong type.",
                                hint="lab is a name or null, args a list, kwargs an object.")
    return req["fn"], lab, args, kwargs


def parse_reply(line: bytes, where: str) -> Any:
    """The result of a reply line, or the error it carries raised here; a reply that is
    not one labkit's daemon writes is a LabkitError, never a traceback."""
    return parse_timed_reply(line, where)[0]


def parse_timed_reply(line: bytes, where: str) -> tuple[Any, float | None]:
    """parse_reply, and the seconds the daemon spent on the request (None if it did not
    say: an older daemon)."""
    try:
        data = json.loads(line) if len(line) <= MAX_MESSAGE else None
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not ("ok" in data or isinstance(data.get("error"),
                                                                     dict)):
        raise LabkitError(f"labkit's daemon {where} sent a malformed reply "
                          f"({len(line)} bytes).",
                          hint="`labkit down` and `labkit vm stop` reset it.")
    if "error" in data:
        raise decode_error(data["error"], where)
    took = data.get("took")
    return data.get("ok"), float(took) if isinstance(took, (int, float)) else None


def encode_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, LabkitError):
        loc = exc.loc
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint,
                "exit_code": exc.exit_code,
                "loc": [loc.file, loc.line, loc.col] if loc else None}
    return {"type": "InternalError", "message": f"{type(exc).__name__}: {exc}", "hint": "",
            "exit_code": 1, "loc": None}


def decode_error(data: dict[str, Any], where: str) -> LabkitError:
    """The guest's error as the same LabkitError subclass here (so exit codes match)."""
    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, LabkitError)) or \
            cls is errors.TopologyError:
        cls = errors.UsageError if data.get("exit_code") == 2 else LabkitError
    raw = data.get("loc")
    loc = (Loc(str(raw[0]), int(raw[1]), int(raw[2]))
           if isinstance(raw, list) and len(raw) == 3 and isinstance(raw[1], int) and
           isinstance(raw[2], int) else None)
    message = str(data.get("message", "unknown error"))
    if data.get("type") == "InternalError":
        message = f"labkit failed {where}: {message}. This is a labkit bug"
    exc = cls.__new__(cls)
    LabkitError.__init__(exc, message, hint=str(data.get("hint", "")), loc=loc)
    return exc
