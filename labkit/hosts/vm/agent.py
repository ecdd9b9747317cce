"""The guest side: runs inside the VM as root and executes what the host asks for.

vng boots the VM with this file as its `--exec` script. It finds labkit's virtio-serial
port by name, says HELLO, then serves OPEN requests: each runs one command in its own
session (process group) and streams its stdout/stderr back as frames, ending with an EXIT
frame carrying the real exit status. In one-shot mode the agent exits after the first
command, which powers the VM off; in persistent mode it serves until the host side of the
port goes away or asks for SHUTDOWN.

Stdlib only, runnable as a plain script (`python3 agent.py`), because it must start even
if the guest's Python cannot import labkit.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import queue
import selectors
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any

if __package__:  # imported by the host side (tests)
    from labkit.hosts.vm import wire
else:  # the guest runs this file as a script under `python -I -S`: stdlib only, fast
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import wire  # type: ignore[no-redef]

PORT_NAME = "org.labkit.ctl"
DRAIN_AFTER_EXIT = 1.0  # seconds to wait for pipes held open by a command's background kids
SLIRP_ADDR, SLIRP_GW = "10.0.2.15/24", "10.0.2.2"


def log(text: str) -> None:
    """Goes to the VM console, which the host keeps in console.log for post-mortems."""
    print(f"labkit-agent: {text}", file=sys.stderr, flush=True)


def find_port(name: str, timeout: float = 30.0) -> str:
    """virtio-serial ports are named by the host; devtmpfs has no by-name links without udev."""
    deadline = time.monotonic() + timeout
    base = "/sys/class/virtio-ports"
    while True:
        try:
            entries = os.listdir(base)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                with open(os.path.join(base, entry, "name")) as fh:
                    if fh.read().strip() == name:
                        return f"/dev/{entry}"
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise SystemExit(f"labkit-agent: no virtio-serial port named {name!r}")
        time.sleep(0.05)


class Port:
    """The shared byte stream (a virtio-serial port, or a socket in tests); writes from
    session threads are serialised by a lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)


class Session(threading.Thread):
    """One command: its process group, its pipes, and the frames that describe it."""

    def __init__(self, port: Port, chan: int, request: dict[str, Any], oneshot: bool) -> None:
        super().__init__(daemon=True, name=f"session-{chan}")
        self.port, self.chan, self.request, self.oneshot = port, chan, request, oneshot
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdin_q: queue.Queue[bytes | None] = queue.Queue()
        self.pending_signal: int | None = None
        self.master_fd: int | None = None  # pty sessions
        self.done = threading.Event()

    # -- called from the reader thread ------------------------------------------------
    def feed_stdin(self, data: bytes | None) -> None:
        self.stdin_q.put(data)

    def resize(self, rows: int, cols: int) -> None:
        """The host's terminal changed size: tell the pty (the kernel sends SIGWINCH)."""
        if self.master_fd is not None:
            try:
                fcntl.ioctl(self.master_fd, termios.TIOCSWINSZ,
                            struct.pack("HHHH", rows, cols, 0, 0))
            except OSError:
                pass

    def send_signal(self, sig: int) -> None:
        if self.proc is None:
            self.pending_signal = sig
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # -- the session thread -----------------------------------------------------------
    def run(self) -> None:
        try:
            reply: dict[str, Any] = {"code": self._run()}
        except _SessionError as exc:
            reply = {"error": str(exc)}
        except Exception as exc:  # report, never die silently: the host is waiting
            reply = {"error": f"agent failure: {exc!r}"}
        try:
            self.port.send(wire.pack_json(wire.EXIT, self.chan, reply))
        except OSError:
            pass  # the host side is gone; nobody is left to tell
        finally:
            self.done.set()
            if self.oneshot:
                os.sync()
                os._exit(0)

    def _run(self) -> int:
        req = self.request
        if req.get("connect"):
            return self._relay(str(req["connect"]), float(req.get("wait") or 0))
        if req.get("pty"):
            return self._run_pty(req)
        argv = [str(a) for a in req["argv"]]
        cwd = req.get("cwd") or "/"
        env = req.get("env")
        if not os.path.isdir(cwd):
            raise _SessionError(f"the working directory {cwd} does not exist inside the VM")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env if env is not None else None,
                stdin=subprocess.PIPE if req.get("stdin") else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if req.get("merge_stderr") else subprocess.PIPE,
                start_new_session=True,
                bufsize=0,
            )
        except FileNotFoundError:
            self._out(wire.STDERR, f"labkit vm: {argv[0]}: command not found\n".encode())
            return 127
        except OSError as exc:
            self._out(wire.STDERR, f"labkit vm: {argv[0]}: {exc.strerror}\n".encode())
            return 126
        self.proc = proc
        if self.pending_signal is not None:
            self.send_signal(self.pending_signal)
        if proc.stdin is not None:
            threading.Thread(target=self._pump_stdin, args=(proc.stdin,), daemon=True).start()
        self._pump_output(proc)
        code = proc.wait()
        self.stdin_q.put(None)  # release the stdin thread if the host never sent EOF
        return 128 - code if code < 0 else code

    def _relay(self, path: str, wait: float = 0.0) -> int:
        """Join the channel to a unix socket in the guest (labkit's guest daemon): a fast
        path for calls that would otherwise start a Python process per request.

        wait: seconds to wait, first, for the daemon this agent started at boot to serve
        (GUESTD_SETTLED): one channel from the host, and its first call goes through as
        soon as the daemon listens."""
        if wait > 0:
            GUESTD_SETTLED.wait(wait)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise _SessionError(f"cannot connect to {path} in the VM: {exc.strerror}") from None

        def pump_in() -> None:
            while True:
                data = self.stdin_q.get()
                try:
                    if data is None:
                        sock.shutdown(socket.SHUT_WR)
                        return
                    sock.sendall(data)
                except OSError:
                    return

        threading.Thread(target=pump_in, daemon=True).start()
        try:
            while True:
                data = sock.recv(wire.CHUNK)
                if not data:
                    return 0
                self._out(wire.STDOUT, data)
        except OSError:
            return 1
        finally:
            self.stdin_q.put(None)
            sock.close()

    def _run_pty(self, req: dict[str, Any]) -> int:
        """An interactive command on a pseudo-terminal: a real shell (job control, line
        editing, the host's terminal size); output and input are one stream."""
        argv = [str(a) for a in req["argv"]]
        size = req.get("pty") or {}
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack(
            "HHHH", int(size.get("rows", 24)), int(size.get("cols", 80)), 0, 0))

        def controlling_tty() -> None:  # runs in the child after setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = dict(req.get("env") or os.environ)
        env.setdefault("TERM", "xterm-256color")
        try:
            proc = subprocess.Popen(argv, cwd=req.get("cwd") or "/", env=env, stdin=slave,
                                    stdout=slave, stderr=slave, start_new_session=True,
                                    preexec_fn=controlling_tty, close_fds=True)
        except OSError as exc:
            os.close(master)
            os.close(slave)
            self._out(wire.STDERR, f"labkit vm: {argv[0]}: {exc.strerror}\n".encode())
            return 127 if isinstance(exc, FileNotFoundError) else 126
        os.close(slave)
        self.proc, self.master_fd = proc, master

        def pump_in() -> None:
            while True:
                data = self.stdin_q.get()
                if data is None:
                    return
                try:
                    os.write(master, data)
                except OSError:
                    return

        threading.Thread(target=pump_in, daemon=True).start()
        while True:
            try:
                data = os.read(master, wire.CHUNK)
            except OSError:  # EIO: the last process holding the slave side is gone
                break
            if not data:
                break
            self._out(wire.STDOUT, data)
        code = proc.wait()
        self.stdin_q.put(None)
        os.close(master)
        self.master_fd = None
        return 128 - code if code < 0 else code

    def _pump_stdin(self, pipe: Any) -> None:
        while True:
            data = self.stdin_q.get()
            try:
                if data is None:
                    pipe.close()
                    return
                pipe.write(data)
            except (BrokenPipeError, OSError, ValueError):
                return

    def _pump_output(self, proc: subprocess.Popen[bytes]) -> None:
        sel = selectors.DefaultSelector()
        if proc.stdout is not None:
            sel.register(proc.stdout, selectors.EVENT_READ, wire.STDOUT)
        if proc.stderr is not None:
            sel.register(proc.stderr, selectors.EVENT_READ, wire.STDERR)
        exited_at: float | None = None
        while sel.get_map():
            for key, _ in sel.select(timeout=0.2):
                data = os.read(key.fd, wire.CHUNK)
                if data:
                    self._out(key.data, data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > DRAIN_AFTER_EXIT:
                break  # a background child holds the pipe; the command itself is done
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()

    def _out(self, kind: int, data: bytes) -> None:
        for frame in wire.pack_chunks(kind, self.chan, data):
            self.port.send(frame)


class _SessionError(Exception):
    """A request that cannot run as asked; reported to the host as an EXIT error."""


def nic_by_mac(mac: str, timeout: float = 10.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/sys/class/net"):
            try:
                with open(f"/sys/class/net/{name}/address") as fh:
                    if fh.read().strip().lower() == mac.lower():
                        return name
            except OSError:
                continue
        time.sleep(0.1)
    return None


def ip_batch(commands: list[str], tolerate: tuple[str, ...] = ()) -> list[str]:
    """Run `ip` commands in one process (each process start costs under TCG); a warning
    per failed command, except failures whose message contains one of `tolerate`."""
    if not commands:
        return []
    res = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(commands) + "\n",
                         capture_output=True, text=True, check=False)
    if res.returncode == 0:
        return []
    warnings, said = [], ""
    for line in res.stderr.splitlines():
        if line.startswith("Command failed -:"):
            number = int(line.rpartition(":")[2] or 0)
            if not any(t in said for t in tolerate) and 0 < number <= len(commands):
                warnings.append(f"ip {commands[number - 1]} failed: {said.strip()}")
            said = ""
        else:
            said += line + " "
    return warnings or [f"ip -batch failed: {res.stderr.strip()}"]


# ioctls (linux/sockios.h) that set the backplane NIC up without an `ip` process
SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR = 0x8913, 0x8914, 0x8916
SIOCSIFMTU, SIOCSIFNAME, SIOCGIFINDEX = 0x8922, 0x8923, 0x8933
IFF_UP = 0x1
BACKPLANE_DEV = "lkbp0"


def _ifreq(name: str, data: bytes = b"") -> bytes:
    """struct ifreq: the interface name, then its 24-byte union."""
    return struct.pack("16s24s", name.encode(), data)


def setup_backplane(iface: str, address: str, mtu: int) -> list[str]:
    """The lab VMs' private network: named lkbp0, jumbo MTU, up, a fixed ULA with DAD off
    (it is ours). Done with ioctls: an `ip` process cost ~0.45 s of a lab VM's boot under
    TCG. A warning if the kernel refused a step (a lab then cannot span kernels)."""
    addr, _, plen = address.partition("/")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if iface != BACKPLANE_DEV:
                fcntl.ioctl(sock, SIOCSIFNAME, _ifreq(iface, BACKPLANE_DEV.encode()))
            fcntl.ioctl(sock, SIOCSIFMTU, _ifreq(BACKPLANE_DEV, struct.pack("i", mtu)))
            flags = struct.unpack_from("H", fcntl.ioctl(sock, SIOCGIFFLAGS,
                                                        _ifreq(BACKPLANE_DEV)), 16)[0]
            fcntl.ioctl(sock, SIOCSIFFLAGS, _ifreq(BACKPLANE_DEV, struct.pack("H", flags | IFF_UP)))
            index = struct.unpack_from("i", fcntl.ioctl(sock, SIOCGIFINDEX,
                                                        _ifreq(BACKPLANE_DEV)), 16)[0]
        # no duplicate address detection: the address is usable at once (ip's `nodad`)
        with open(f"/proc/sys/net/ipv6/conf/{BACKPLANE_DEV}/accept_dad", "w") as fh:
            fh.write("0")
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock6:
            in6_ifreq = struct.pack("16sIi", socket.inet_pton(socket.AF_INET6, addr),
                                    int(plen or 128), index)
            try:
                fcntl.ioctl(sock6, SIOCSIFADDR, in6_ifreq)
            except FileExistsError:
                pass  # already there: fine
    except (OSError, ValueError) as exc:
        message = f"setting up the backplane NIC {iface} failed ({exc}); labs cannot span kernels"
        log(message)
        return [message]
    return []


def built_in(module: str) -> bool:
    """A feature compiled into the kernel (=y) has nothing to load: modprobe fails on a
    kernel without a modules directory (a bare bzImage), yet the feature is there."""
    name = module.replace("-", "_")
    if os.path.isdir(f"/sys/module/{name}"):
        return True
    try:
        with open(f"/lib/modules/{os.uname().release}/modules.builtin") as fh:
            return any(os.path.basename(line.strip()).removesuffix(".ko").replace("-", "_")
                       == name for line in fh)
    except OSError:
        return False


def forward_commands(iface: str) -> list[str]:
    """Port forwards use qemu's user network: its NIC up with slirp's fixed address."""
    return [f"link set {iface} up", f"addr add {SLIRP_ADDR} dev {iface}",
            f"route add default via {SLIRP_GW} dev {iface}"]


def setup_nics(net_mac: str, bp_mac: str, bp_addr: str, bp_mtu: int) -> list[str]:
    """The forwarding NIC (one `ip -batch`) and the backplane NIC (ioctls); virtio_net is
    loaded beforehand."""
    warnings: list[str] = []
    for mac, what, lost in ((net_mac, "network", "port forwards will not work"),
                            (bp_mac, "backplane", "labs cannot span kernels")):
        iface = nic_by_mac(mac) if mac else ""
        if iface is None:
            warnings.append(f"no {what} interface with MAC {mac}; {lost}")
        elif iface and mac == bp_mac:
            warnings += setup_backplane(iface, bp_addr, bp_mtu)
        elif iface:
            # already there (the address or default route): fine
            warnings += ip_batch(forward_commands(iface),
                                 tolerate=("File exists", "already assigned"))
    return warnings


def fast_mounts(tag: str, ro_dirs: list[str], rw_dirs: list[str]) -> list[str]:
    """Re-mount hot host trees from a 9p share with cache=loose.

    vng mounts the guest's root with 9p cache=none: under TCG every lookup is a slow
    round trip, and a Python importing typer/rich/pyroute2 spends minutes in the kernel.
    The host adds a second read-only share of / for labkit; mounted with cache=loose it is
    bound over the Python install and the venv (read-only), and under an overlay over the
    working tree (writable in the guest only). Host edits made after boot may not show
    through these (that is what loose caching trades away).
    """
    warnings: list[str] = []
    base = "/run/labkit-host"
    os.makedirs(base, exist_ok=True)
    opts = "trans=virtio,version=9p2000.L,cache=loose,msize=524288,access=any"
    failed = mount(tag, base, "9p", MS_RDONLY, opts)
    if failed:
        return [f"mounting the cached host share failed: {failed}"]
    dirs = [(d, False) for d in ro_dirs] + [(d, True) for d in rw_dirs]
    for n, (d, writable) in enumerate(sorted(dirs, key=lambda x: len(x[0]))):
        src = base + d
        if not (os.path.isdir(src) and os.path.isdir(d)):
            continue
        if writable:
            ovl = f"/run/labkit-ovl/{n}"
            os.makedirs(f"{ovl}/upper", exist_ok=True)
            os.makedirs(f"{ovl}/work", exist_ok=True)
            failed = mount("overlay", d, "overlay", 0,
                           f"lowerdir={src},upperdir={ovl}/upper,workdir={ovl}/work")
            what = f"an overlay of {src} on {d}"
        else:
            failed = mount(src, d, None, MS_BIND, None)
            what = f"a bind mount of {src} on {d}"
        if failed:
            warnings.append(f"{what} failed: {failed}")
    return warnings


MS_RDONLY, MS_BIND = 1, 4096  # <sys/mount.h>
_LIBC: Any = None


def mount(source: str, target: str, fstype: str | None, flags: int,
          data: str | None) -> str | None:
    """mount(2) itself; None, or why it failed. util-linux's `mount`, a dynamically linked
    binary, cost ~160 ms a call under TCG; ctypes costs ~100 ms once, then <5 ms a mount."""
    import ctypes

    global _LIBC
    _LIBC = _LIBC or ctypes.CDLL(None, use_errno=True)  # once for all of a boot's mounts
    done = _LIBC.mount(source.encode(), target.encode(),
                       fstype.encode() if fstype else None, flags,
                       data.encode() if data else None)
    return None if done == 0 else os.strerror(ctypes.get_errno())


def uptime() -> float | None:
    """Seconds since the guest kernel started: the host turns it into boot phases."""
    try:
        with open("/proc/uptime") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


AGENT_UPTIME = uptime()
# (step, guest uptime) of the agent's setup before HELLO: the host's phase trace of a boot
STEPS: list[tuple[str, float | None]] = []
SBIN_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def step(name: str) -> None:
    STEPS.append((name, uptime()))


def start_modules(modules: list[str]) -> subprocess.Popen[bytes] | None:
    """Start loading every module in one modprobe (under TCG each process start costs),
    in the background: it overlaps mounting the cached share and the daemon's start."""
    if not modules:
        return None
    return subprocess.Popen(["modprobe", "-a", *modules], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def load_modules(modules: list[str], quiet: tuple[str, ...] = (),
                 started: subprocess.Popen[bytes] | None = None) -> list[str]:
    """Wait for the modprobe started by start_modules (or run it now); only if it failed,
    load them one by one, to say which failed (never those in `quiet`)."""
    if not modules:
        return []
    if started is None:
        started = start_modules(modules)
    if started is not None and started.wait() == 0:
        return []
    warnings = []
    for module in modules:
        res = subprocess.run(["modprobe", module], capture_output=True, text=True, check=False)
        if res.returncode != 0 and module not in quiet and not built_in(module):
            warnings.append(f"modprobe {module} failed: {res.stderr.strip()}")
            log(warnings[-1])
    return warnings


# Set once the daemon start_guestd launched serves, or has failed: its foreground process
# exits when the daemon's socket accepts connections (labkit.hosts.guestd --detach). Set
# at once when this agent starts no daemon, so a relay never waits for none.
GUESTD_SETTLED = threading.Event()


def start_guestd(python: str) -> str:
    """Start labkit's daemon now, so its imports (seconds under emulation) overlap the rest
    of the boot; the host waits for it to answer. Its pid, or "" if it could not start."""
    env = dict(os.environ, LABKIT_IN_VM=os.uname().nodename)
    path = env.get("PATH", "").split(":")
    env["PATH"] = ":".join([*path, *(d for d in SBIN_PATH if d not in path)]).strip(":")
    try:
        proc = subprocess.Popen([python, "-m", "labkit.hosts.guestd", "--detach"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd="/", env=env)
    except OSError as exc:
        log(f"starting labkit's daemon failed: {exc}")
        GUESTD_SETTLED.set()
        return ""

    def settle() -> None:  # reap its foreground: it exits once the daemon serves
        proc.wait()
        GUESTD_SETTLED.set()

    threading.Thread(target=settle, daemon=True).start()
    return str(proc.pid)


def serve(port: Port, oneshot: bool, warnings: list[str], guestd: str = "") -> None:
    sessions: dict[int, Session] = {}
    hello = {"release": os.uname().release, "pid": os.getpid(), "warnings": warnings,
             "uptime": uptime(), "agent_uptime": AGENT_UPTIME, "guestd": guestd,
             "steps": STEPS}
    port.send(wire.pack_json(wire.HELLO, 0, hello))
    while True:
        frame = wire.read_frame(port.read)
        if frame is None:
            log("host side of the port closed; shutting down")
            break
        kind, chan, payload = frame
        for done in [c for c, s in sessions.items() if s.done.is_set()]:
            del sessions[done]
        if kind == wire.SHUTDOWN:
            log("shutdown requested")
            break
        if kind == wire.OPEN:
            old = sessions.get(chan)
            if old is not None and not old.done.is_set():
                port.send(wire.pack_json(wire.EXIT, chan, {"error": f"channel {chan} busy"}))
                continue
            session = Session(port, chan, wire.load_json(payload), oneshot)
            sessions[chan] = session
            session.start()
            continue
        session = sessions.get(chan)
        if session is None:
            continue
        if kind == wire.STDIN:
            session.feed_stdin(payload)
        elif kind == wire.STDIN_EOF:
            session.feed_stdin(None)
        elif kind == wire.SIGNAL:
            session.send_signal(int(wire.load_json(payload)["signal"]))
        elif kind == wire.RESIZE:
            size = wire.load_json(payload) or {}
            session.resize(int(size.get("rows", 24)), int(size.get("cols", 80)))
    for session in sessions.values():
        session.send_signal(signal.SIGKILL)
    for session in sessions.values():
        session.done.wait(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit-agent")
    parser.add_argument("--oneshot", action="store_true")
    parser.add_argument("--net-mac", default="")
    parser.add_argument("--bp-mac", default="")
    parser.add_argument("--bp-addr", default="")
    parser.add_argument("--bp-mtu", type=int, default=9000)
    parser.add_argument("--modprobe", action="append", default=[])
    parser.add_argument("--fast-tag", default="")
    parser.add_argument("--fast-ro", action="append", default=[])
    parser.add_argument("--fast-rw", action="append", default=[])
    parser.add_argument("--guestd", default="", help="python to start labkit's daemon with")
    args = parser.parse_args(argv)
    warnings = []
    nics = ["virtio_net"] if args.net_mac or args.bp_mac else []
    modules = [*args.modprobe, *(m for m in nics if m not in args.modprobe)]
    loading = start_modules(modules)
    if args.fast_tag:
        warnings += fast_mounts(args.fast_tag, args.fast_ro, args.fast_rw)
        step("cached share mounted")
    guestd = start_guestd(args.guestd) if args.guestd else ""
    if guestd:
        step("daemon started")
    else:
        GUESTD_SETTLED.set()
    warnings += load_modules(modules, quiet=tuple(m for m in nics if m not in args.modprobe),
                             started=loading)
    if modules:
        step("modules loaded")
    if args.net_mac or args.bp_mac:
        warnings += setup_nics(args.net_mac, args.bp_mac, args.bp_addr, args.bp_mtu)
        step("NICs up")
    port = Port(os.open(find_port(PORT_NAME), os.O_RDWR))
    serve(port, args.oneshot, warnings, guestd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
