"""Named network namespaces, made and entered in-process.

`ip netns add` forks and execs once per namespace; doing the same unshare + bind mount
from this process costs microseconds, which is what lets a 256-node lab come up faster
than a shell loop. Names live in /run/netns so `ip netns`, `ip -n` and iproute2's `tipc`
see the same namespaces labkit made.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MS_REC = 0x4000
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path_of(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path_of(name))


def list_names(prefix: str = "") -> list[str]:
    """Names under /run/netns starting with prefix, sorted."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


_run_dir_ready = False


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so bind mounts propagate.

    Once per process: the recursive remount costs milliseconds per existing namespace,
    which made creating thousands of namespaces quadratic.
    """
    global _run_dir_ready
    if _run_dir_ready and os.path.isdir(NETNS_RUN_DIR):
        return
    _run_dir_ready = True
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    if _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        return
    # Not a mount point yet: bind it onto itself, then make it shared.
    _libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_BIND | MS_REC, None)
    _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None)


def create(name: str) -> None:
    """Create a persistent named namespace; FileExistsError if the name is taken."""
    _ensure_run_dir()
    path = path_of(name)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _check(
                _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                f"bind mount of {path}",
            )
        finally:
            _check(_libc.setns(orig, CLONE_NEWNET), "setns back to the original namespace")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(orig)


def delete(name: str) -> bool:
    """Remove a named namespace (idempotent); the kernel frees it once nothing holds it."""
    path = path_of(name)
    if not os.path.lexists(path):
        return False
    _libc.umount2(path.encode(), MNT_DETACH)  # EINVAL when never mounted (killed mid-create)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def inode(name: str) -> int | None:
    """The namespace's inode, which /proc/PID/ns/net links name as net:[INODE]."""
    try:
        st = os.stat(path_of(name))
    except FileNotFoundError:
        return None
    # An unmounted placeholder file lives on the tmpfs, not nsfs: it is no namespace.
    root = os.stat(NETNS_RUN_DIR)
    return st.st_ino if st.st_dev != root.st_dev else None


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Switch this thread into the namespace and back; sockets made inside stay there."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns into {name}")
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _check(_libc.setns(orig, CLONE_NEWNET), "setns back to the original namespace")
    finally:
        os.close(orig)


def enter_fd(fd: int) -> None:
    """Move this thread into the namespace an fd refers to (setns(2)), for a worker thread
    that should stay there; OSError if the kernel refuses (the namespace went away)."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def socket_in(name: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket that belongs to the namespace, usable from any thread."""
    with entered(name):
        return socket.socket(family, type_, proto)


def open_fd(name: str) -> int:
    """An fd on the namespace, for IFLA_NET_NS_FD when creating links across namespaces."""
    return os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)


def of_pid(pid: int) -> int | None:
    """The inode of a process's network namespace; None once it is gone."""
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return int(link[5:-1]) if link.startswith("net:[") else None


def pids_in(inodes: set[int]) -> list[int]:
    """Every process whose network namespace is one of these: what down must stop."""
    me = os.getpid()
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and int(entry) != me and of_pid(int(entry)) in inodes]


ENTER_TIMEOUT = 30.0  # s: then the process is returned anyway (down still finds it later)


def wait_inside(proc: subprocess.Popen[Any], inode: int | None) -> None:
    """Until a process started to enter a namespace (`ip netns exec`, `nsenter`) is in it,
    or has ended: both enter after their start (seconds later on a loaded TCG guest), and
    a `down` in that window neither finds the process nor keeps it out."""
    from labkit.base.wait import poll

    if inode is not None:
        poll(lambda: proc.poll() is not None or of_pid(proc.pid) == inode, ENTER_TIMEOUT,
             interval=0.01)

