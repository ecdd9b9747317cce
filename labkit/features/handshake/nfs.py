"""NFSv4.2 over TLS between two lab nodes: the kernel server (nfsd, driven by nfs-utils'
rpc.nfsd, exportfs and rpc.mountd) in one, the kernel client mounting with
`xprtsec=tls|mtls` in the other.

nfsd is per network namespace and so is its control filesystem, so the server side runs
as one process in the node (a shell that mounts the node's nfsd filesystem, exports the
lab's tmpfs and becomes rpc.mountd): its private mount namespace also gives it its own
/etc/exports and /var/lib/nfs, so labs in one kernel never see each other's exports. The
client mounts with mount(2) from a thread inside the node, in the kernel's root mount
namespace (so the mount outlives the call and the lab can read through it); the RPC
transport, and with it the TLS handshake, belongs to the node's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import subprocess

from labkit.base import netns
from labkit.base.wait import wait_until
from labkit.errors import LabkitError, MissingFeatureError
from labkit.features.handshake import paths
from labkit.features.handshake.kmods import modprobe

SERVER_MODULES = ("nfsd",)
CLIENT_MODULES = ("nfsv4",)
TOOLS = ("rpc.nfsd", "rpc.mountd", "exportfs")
MNT_DETACH = 2
GRACE = 10  # s: NFSv4 grace period and lease (the minimum); new files wait out the grace
_libc = ctypes.CDLL(None, use_errno=True)


def check_tools() -> None:
    import shutil

    missing = [t for t in TOOLS if shutil.which(t) is None and
               not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        raise MissingFeatureError(f"the NFS server tools are not installed ({', '.join(missing)}).",
                                  hint="Install nfs-kernel-server (`apt-get install "
                                       "nfs-kernel-server nfs-common`, scripts/setup.sh).")


def export_dir(lab: str) -> str:
    return paths.work(lab, "export")


def mount_point(lab: str) -> str:
    return paths.work(lab, "mnt")


def _mount(source: str, target: str, fstype: str, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), 0, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def _umount(target: str) -> bool:
    return _libc.umount2(target.encode(), MNT_DETACH) == 0


def prepare_export(lab: str, size_mb: int) -> str:
    """A tmpfs of its own (exportable, unlike the VM's 9p root) mounted at the export dir."""
    path = export_dir(lab)
    os.makedirs(path, mode=0o755, exist_ok=True)
    if not os.path.ismount(path):
        _mount("labkit-nfs", path, "tmpfs", f"size={size_mb}m,mode=0755")
    return path


def server_script(lab: str, address: str, client: str) -> str:
    """The server process: nfsd's control fs, the lab's exports, nfsd, then mountd."""
    var = paths.work(lab, "var-lib-nfs")
    exports = paths.work(lab, "exports")
    line = f"{export_dir(lab)} {client}(rw,sync,no_root_squash,no_subtree_check,insecure,fsid=0)"
    os.makedirs(var, mode=0o700, exist_ok=True)
    for name in ("etab", "rmtab"):
        open(os.path.join(var, name), "a").close()
    os.makedirs(os.path.join(var, "v4recovery"), exist_ok=True)
    with open(exports, "w") as fh:
        fh.write(line + "\n")
    q = shlex.quote
    return "; ".join([
        "set -e",
        f"mount --bind {q(var)} /var/lib/nfs",
        f"mount --bind {q(exports)} /etc/exports",
        "mount -t nfsd nfsd /proc/fs/nfsd",
        "exportfs -ra",
        f"rpc.nfsd -N 3 -U -G {GRACE} -L {GRACE} -H {q(address)} 4",
        "exec rpc.mountd -F -N 3 -u",
    ])


def server_listening(ns: str) -> bool:
    res = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tlnH", "sport = :2049"],
                         capture_output=True, text=True, timeout=30)
    return "LISTEN" in res.stdout


def stop_server(ns: str) -> None:
    """nfsd's threads and sockets in the node (its mountd dies with the lab's processes)."""
    if not netns.exists(ns):
        return
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                    "mount -t nfsd nfsd /proc/fs/nfsd && rpc.nfsd 0"],
                   capture_output=True, text=True, timeout=60)


def mount(lab: str, ns: str, server: str, client: str, xprtsec: str,
          timeout_ds: int = 100) -> str:
    """Mount the server's export root from inside the client node; the mount point."""
    modprobe(*CLIENT_MODULES)
    target = mount_point(lab)
    os.makedirs(target, mode=0o755, exist_ok=True)
    if os.path.ismount(target):
        return target
    opts = ["vers=4.2", f"addr={server}", f"clientaddr={client}", "soft",
            f"timeo={timeout_ds}", "retrans=2"]
    if xprtsec != "none":
        opts.append(f"xprtsec={xprtsec}")
    source = f"[{server}]:/" if ":" in server else f"{server}:/"
    with netns.entered(ns):
        try:
            _mount(source, target, "nfs4", ",".join(opts))
        except OSError as exc:
            raise LabkitError(f"mounting {source} on {target} from node namespace {ns} "
                              f"failed: {os.strerror(exc.errno or 0)}.",
                              hint="See `labkit handshake status` (a failed handshake says "
                                   "why) and the kernel log (`dmesg | grep -i -e nfs -e "
                                   "rpc`).") from None
    return target


def unmount(lab: str) -> bool:
    target = mount_point(lab)
    if os.path.ismount(target):
        return _umount(target)
    return False


def remove_dirs(lab: str) -> None:
    """The lab's NFS directories, once nothing is mounted on them."""
    base = paths.work(lab)
    for mnt in (mount_point(lab), export_dir(lab)):
        if os.path.ismount(mnt):
            _umount(mnt)
    for sub in (mount_point(lab), export_dir(lab)):
        with contextlib.suppress(OSError):
            os.rmdir(sub)
    var = paths.work(lab, "var-lib-nfs")
    if os.path.isdir(var) and not os.path.ismount(var):
        import shutil

        shutil.rmtree(var, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.work(lab, "exports"))
    with contextlib.suppress(OSError):
        os.rmdir(base)


def wait_server(ns: str, timeout: float) -> None:
    wait_until(lambda: server_listening(ns), timeout, "nfsd to listen on port 2049",
               hint="The server's log is in the lab's handshake log "
                    "(`labkit handshake status`).")


def write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
