"""Files labkit writes (secrets, lab state: 0600, never through a symlink) and files it
reads (bounded, regular files only).

Keys (TIPC, TLS, PSK), key logs and lab state files all go through write_private, so the
mode and the no-follow rule are decided once; every file labkit reads (topology, scenario,
exercise, key, bundle, state) goes through read_bounded, so a device, a pipe or a huge file
is refused once, with the file, the reason and the fix.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Literal, overload

from labkit.errors import Loc, UsageError


def write_private(path: str | os.PathLike[str], data: str | bytes, *,
                  atomic: bool = False) -> None:
    """Write data to a new file readable by its owner only (0600).

    An existing file or symlink at path is replaced, never followed or reused. With
    atomic=True the content appears all at once (write to a temp file, then rename), for
    state that a reader must never see half written.
    """
    path = os.fspath(path)
    raw = data.encode() if isinstance(data, str) else data
    target = f"{path}.tmp.{os.getpid()}" if atomic else path
    if os.path.lexists(target):
        os.unlink(target)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
    except BaseException:
        os.unlink(target)
        raise
    if atomic:
        os.replace(target, path)


def private_dir(path: str | os.PathLike[str]) -> str:
    """A directory only its owner can enter (0700), created if missing."""
    path = os.fspath(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


# -- reading files a user (or a stale cache) hands us -------------------------------------
#
# Every file labkit reads is refused, before a byte is read, unless it is a regular file
# no larger than its kind's bound: a symlink to /dev/zero, a FIFO or a directory named
# x.yaml once read until the OOM killer stopped the machine. The bound is checked on the
# stat, and the read itself stops at bound+1 bytes, so a file that grows while we read, or
# a /proc-like file whose size says 0, cannot get past it either.


@dataclass(frozen=True)
class Kind:
    """What a file is to labkit: its name in messages, its size bound, and the fix."""

    what: str       # "topology file": used in "the topology file is ..."
    limit: int      # bytes
    example: str    # the hint when the path is wrong: what to give instead


KiB, MiB = 1024, 1024 * 1024
TOPOLOGY = Kind("topology file", 2 * MiB,
                "Give the path of a topology YAML file, e.g. topologies/pair.yaml.")
SCENARIO = Kind("scenario file", 2 * MiB,
                "Give the path of a scenario YAML file, e.g. repro/sockmap-fionread.yaml.")
EXERCISE = Kind("exercises file", 2 * MiB,
                "Give the path of a YAML file, e.g. labs/exercises/01-first-lab.yaml.")
BUNDLE = Kind("bundle", 256 * MiB, "Give the path of a bundle `labkit repro run` wrote.")
KEY = Kind("key file", 64 * KiB,
           "Give the path of a key file, e.g. one written by `openssl rand -hex 48 > k`.")
KEYLOG = Kind("key log", 64 * MiB, "Give the path of an NSS key log (SSLKEYLOGFILE).")
PCAP = Kind("capture file", 256 * MiB, "Give the path of a pcap file.")
STATE = Kind("state file", 16 * MiB,
             "labkit wrote this file itself: remove it (`labkit down NAME` does) and "
             "start again.")
CONFIG = Kind("configuration file", 4 * MiB, "Give the path of a JSON configuration file.")


class FileRefused(UsageError):
    """A file labkit would not read: missing, not a regular file, too large, not text.

    `reason` says which ("missing", "not-regular", "too-large", "unreadable", "not-text")
    and `errno` carries the system's error number where there is one, so a caller can
    treat a missing state file as "no lab" and every other refusal as the user's error.
    """

    def __init__(self, message: str, *, hint: str, path: str, reason: str,
                 errno: int = 0, line: int = 0, col: int = 0) -> None:
        super().__init__(message, hint=hint, loc=Loc(path, line, col))
        self.path = path
        self.reason = reason
        self.errno = errno

    @property
    def missing(self) -> bool:
        return self.reason == "missing"


_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def _type_name(mode: int) -> str:
    return next((name for test, name in _TYPES if test(mode)), "not a regular file")


def _through(path: str) -> str:
    if not os.path.islink(path):
        return ""
    return f" (the path is a symlink to {os.path.realpath(path)})"


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / KiB:.1f} KiB" if n >= KiB else f"{n} B"


def open_regular(path: str | os.PathLike[str], kind: Kind) -> BinaryIO:
    """The file opened for reading, after the checks read_bounded makes before reading (a
    regular file, at most kind.limit bytes): for readers that stream, such as tarfile."""
    return os.fdopen(_open_checked(os.fspath(path), kind), "rb")


def _open_checked(path: str, kind: Kind) -> int:
    """A descriptor on path once it is known to be a regular file within kind's bound:
    stat first (following symlinks), open without blocking, then check the opened file
    is the one stat saw."""
    what = kind.what

    def refuse(message: str, hint: str, reason: str, err: int = 0) -> FileRefused:
        return FileRefused(message, hint=hint, path=path, reason=reason, errno=err)

    try:
        st = os.stat(path)
    except FileNotFoundError:
        broken = " (a symlink whose target does not exist)" if os.path.islink(path) else ""
        raise refuse(f"no such {what}{broken}.", kind.example, "missing", errno.ENOENT) \
            from None
    except OSError as exc:
        raise refuse(f"cannot read the {what}: {exc.strerror}.", kind.example,
                     "unreadable", exc.errno or 0) from None
    if not stat.S_ISREG(st.st_mode):
        why = ("" if stat.S_ISDIR(st.st_mode) else "; labkit reads only regular files, so "
               "that a device or a pipe cannot feed it endless input")
        raise refuse(f"the {what} is {_type_name(st.st_mode)}, not a regular file"
                     f"{_through(path)}{why}.", kind.example, "not-regular")
    if st.st_size > kind.limit:
        raise refuse(f"the {what} is {_size(st.st_size)}; labkit reads at most "
                     f"{_size(kind.limit)} from a {what}.",
                     f"Check that this is the right file: a {what} is at most "
                     f"{_size(kind.limit)}.", "too-large")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise refuse(f"cannot read the {what}: {exc.strerror}.", kind.example,
                     "unreadable", exc.errno or 0) from None
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise refuse(f"the {what} changed while labkit opened it.",
                     "Give a file nothing else is replacing.", "not-regular")
    return fd


@overload
def read_bounded(path: str | os.PathLike[str], kind: Kind, *,
                 binary: Literal[False] = False) -> str: ...
@overload
def read_bounded(path: str | os.PathLike[str], kind: Kind, *,
                 binary: Literal[True]) -> bytes: ...
def read_bounded(path: str | os.PathLike[str], kind: Kind, *,
                 binary: bool = False) -> str | bytes:
    """The content of a regular file of at most kind.limit bytes (text: UTF-8), or
    FileRefused naming the file, the reason and the fix.

    Refuses before reading: stat first (following symlinks: a symlink to a regular file is
    fine), then open without blocking and check the opened file is the one stat saw, then
    read at most limit+1 bytes. Bounded in time and memory whatever the path names.
    """
    path = os.fspath(path)
    what = kind.what
    fd = _open_checked(path, kind)
    try:
        chunks: list[bytes] = []
        got = 0
        while got <= kind.limit:
            chunk = os.read(fd, min(kind.limit + 1 - got, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise FileRefused(f"cannot read the {what}: {exc.strerror}.", hint=kind.example,
                          path=path, reason="unreadable", errno=exc.errno or 0) from None
    finally:
        os.close(fd)
    too_big = (f"Check that this is the right file: a {what} is at most "
               f"{_size(kind.limit)}.")
    if got > kind.limit:
        raise FileRefused(f"the {what} grew past {_size(kind.limit)} while labkit read it; "
                          f"labkit reads at most that from a {what}.", hint=too_big,
                          path=path, reason="too-large")
    raw = b"".join(chunks)
    if binary:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FileRefused(f"the {what} is not UTF-8 text (byte {exc.start} cannot be "
                          "decoded).", hint="Save it as UTF-8 text; is this the right file?",
                          path=path, reason="not-text", line=line, col=col) from None
