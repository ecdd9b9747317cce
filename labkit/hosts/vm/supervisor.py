"""One small process per persistent VM: owns vng/qemu and multiplexes `exec` clients.

Why a process of our own between the clients and qemu: the guest has one serial port, a
single byte stream, and qemu's socket backend serves one client at a time; yet several
`labkit vm exec` (or `labkit status --json` forwarded by a lab) may run at once. The
supervisor holds qemu's connection and gives each client connection on ctl.sock its own
channel number, rewriting channels both ways. It also notices when qemu dies (crash,
kernel panic) and records that in state.json, killing whatever is left of its process
group, so a crashed VM leaves no process behind.

Run as `python -m labkit.hosts.vm.supervisor STATE_DIR`, in its own session: its process
group holds vng, virtme-run and qemu, which is what `stop` kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from labkit.base import files, procs
from labkit.errors import LabkitError
from labkit.hosts.vm import backplane, boot, wire

CLIENT_CHAN = 1  # clients always speak channel 1; the supervisor maps it


def write_state(state_dir: Path, **fields: Any) -> None:
    """Atomically merge fields into state.json, which `list` and `start` read."""
    path = state_dir / "state.json"
    try:
        state = json.loads(files.read_bounded(path, files.STATE))
    except (OSError, ValueError, RecursionError, files.FileRefused):
        state = {}
    state = state if isinstance(state, dict) else {}
    state.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class _Conn:
    def __init__(self, sock: socket.socket, chan: int) -> None:
        sock.setblocking(False)
        self.sock, self.chan = sock, chan
        self.reader = wire.FrameReader()
        self.out = bytearray()
        self.finished = False  # EXIT relayed: a disconnect is then normal


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.config = json.loads((state_dir / "config.json").read_text())
        self.console = state_dir / "console.log"
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, _Conn] = {}
        self.next_chan = 2
        self.stopping = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.guest: _Conn | None = None

    # -- lifecycle --------------------------------------------------------------------
    def main(self) -> int:
        os.umask(0o077)
        procs.become_subreaper()  # qemu, orphaned when its wrapper dies, is reaped here
        write_state(self.dir, status="booting", pid=os.getpid(), pgid=os.getpgrp(),
                    starttime=procs.starttime(os.getpid()), started_at=time.time())
        listener = boot.listen(str(self.dir / "serial.sock"))
        argv = list(self.config["argv"])
        bp_vm = self.config.get("backplane_vm")
        if bp_vm:  # qemu's backplane TAP must be born in the backplane namespace
            argv = ["ip", "netns", "exec", backplane.NS, *argv]

        def start() -> subprocess.Popen[bytes]:
            with open(self.console, "ab") as log:
                self.proc = subprocess.Popen(
                    argv, env=self.config["env"], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, close_fds=True,
                )
            if bp_vm:
                threading.Thread(target=self._join_backplane, args=(bp_vm,),
                                 daemon=True).start()
            return self.proc

        def stop(proc: subprocess.Popen[bytes]) -> None:
            procs.stop_group(os.getpgrp(), exclude=os.getpid())  # vng and its qemu
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            procs.reap_children()

        try:
            _, conn, hello = boot.boot_until_agent(
                start, stop, listener, self.console, float(self.config["boot_timeout"])
            )
        except LabkitError as exc:
            self._finish()
            write_state(self.dir, status="failed", reason=exc.message)
            return 1
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / "serial.sock")
        self.guest = _Conn(conn, 0)
        self.sel.register(conn, selectors.EVENT_READ, self.guest)
        ctl = boot.listen(str(self.dir / "ctl.sock"))
        ctl.setblocking(False)
        self.sel.register(ctl, selectors.EVENT_READ, None)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        write_state(self.dir, status="running", guest=hello, ready_at=time.time())
        reason = self._loop(ctl)
        self._finish()  # first, so that "crashed" is only ever seen with qemu gone
        if self.stopping:
            write_state(self.dir, status="stopped", reason="stopped on request")
        else:
            write_state(self.dir, status="crashed", reason=reason + boot.console_tail(self.console))
        return 0

    def _join_backplane(self, vm: str) -> None:
        try:
            backplane.attach(vm, float(self.config["boot_timeout"]))
        except LabkitError as exc:  # the lab will say its links are down; say why here
            with open(self.console, "a") as log:
                log.write(f"labkit: backplane: {exc.message}\n")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def _finish(self) -> None:
        """Leave no process behind: everything else in our process group goes."""
        for sock in list(self.sel.get_map().values()):
            with contextlib.suppress(OSError):
                sock.fileobj.close()  # type: ignore[union-attr]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / "ctl.sock")
        procs.stop_group(os.getpgrp(), exclude=os.getpid())
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        procs.reap_children()  # qemu among them: gone, not a zombie, when we exit

    # -- the relay --------------------------------------------------------------------
    def _loop(self, ctl: socket.socket) -> str:
        assert self.guest is not None and self.proc is not None
        while not self.stopping:
            for key, events in self.sel.select(timeout=0.5):
                if key.data is None:
                    self._accept(ctl)
                    continue
                conn: _Conn = key.data
                if events & selectors.EVENT_WRITE:
                    self._flush(conn)
                if events & selectors.EVENT_READ:
                    gone = self._read(conn)
                    if gone and conn is self.guest:
                        return "the VM's serial channel closed (the guest powered off or crashed)"
            if self.proc.poll() is not None:
                return f"vng exited with status {self.proc.returncode}"
        return "stopped"

    def _accept(self, ctl: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = ctl.accept()
            conn = _Conn(sock, self.next_chan)
            self.next_chan += 1
            self.clients[conn.chan] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> bool:
        """Relay what arrived; True when conn reached end of stream (and was dropped)."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return True
        try:
            frames = conn.reader.feed(data)
        except wire.ProtocolError:
            self._drop(conn)
            return conn is self.guest
        for kind, chan, payload in frames:
            if conn is self.guest:
                client = self.clients.get(chan)
                if client is None:
                    continue
                if kind == wire.EXIT:
                    client.finished = True
                self._queue(client, wire.pack(kind, CLIENT_CHAN, payload))
            elif kind == wire.SHUTDOWN:
                self._queue(self.guest, wire.pack(kind, 0, payload))  # type: ignore[arg-type]
            else:
                self._queue(self.guest, wire.pack(kind, conn.chan, payload))  # type: ignore[arg-type]
        return False

    def _drop(self, conn: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()
        if conn is self.guest:
            return
        self.clients.pop(conn.chan, None)
        if not conn.finished and self.guest is not None:
            # The client went away mid-command (Ctrl-C, killed): do not leave it running.
            kill = wire.pack_json(wire.SIGNAL, conn.chan, {"signal": int(signal.SIGKILL)})
            self._queue(self.guest, kill)

    def _queue(self, conn: _Conn, frame: bytes) -> None:
        conn.out += frame
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
                del conn.out[:sent]
            except BlockingIOError:
                pass
            except OSError:
                conn.out.clear()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(conn.sock, events, conn)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return Supervisor(Path(args[0])).main()


if __name__ == "__main__":
    sys.exit(main())
