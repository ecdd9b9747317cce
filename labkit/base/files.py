"""Files that hold secrets or lab state: created 0600, never through a symlink.

Keys (TIPC, TLS, PSK), key logs and lab state files all go through write_private, so the
mode and the no-follow rule are decided once.
"""

from __future__ import annotations

import os


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
