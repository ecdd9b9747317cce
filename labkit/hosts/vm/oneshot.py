"""`labkit vm run`: boot, run one command as root, power off, return its exit status.

The VM lives exactly as long as this call. vng runs in its own process group so that
whatever happens (Ctrl-C, an exception, a hung guest), the whole group, qemu included, is
killed and reaped before run() returns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, overload

from labkit.base import procs
from labkit.base.wait import poll
from labkit.errors import LabkitError
from labkit.hosts.vm import boot, paths
from labkit.hosts.vm.kernels import DEFAULT_KERNEL
from labkit.hosts.vm.session import Completed, VmGone, make_request, run_session, streams_are_same

POWEROFF_WAIT = 5.0


@overload
def run(
    cmd: Sequence[str], kernel: str = ..., *, capture: Literal[False] = ...,
    memory: str | None = ..., cpus: int | None = ..., cwd: str | None = ...,
    env: dict[str, str] | None = ..., stdin: bytes | None = ..., forward_stdin: bool = ...,
    merge_stderr: bool | None = ..., rwdirs: Sequence[str] = ...,
    modules: Sequence[str] | None = ..., boot_timeout: float | None = ...,
    timeout: float | None = ..., append: Sequence[str] = ...,
) -> int: ...


@overload
def run(
    cmd: Sequence[str], kernel: str = ..., *, capture: Literal[True],
    memory: str | None = ..., cpus: int | None = ..., cwd: str | None = ...,
    env: dict[str, str] | None = ..., stdin: bytes | None = ..., forward_stdin: bool = ...,
    merge_stderr: bool | None = ..., rwdirs: Sequence[str] = ...,
    modules: Sequence[str] | None = ..., boot_timeout: float | None = ...,
    timeout: float | None = ..., append: Sequence[str] = ...,
) -> Completed: ...


def run(
    cmd: Sequence[str],
    kernel: str = DEFAULT_KERNEL,
    *,
    capture: bool = False,
    memory: str | None = None,
    cpus: int | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    forward_stdin: bool = False,
    merge_stderr: bool | None = None,
    rwdirs: Sequence[str] = (),
    modules: Sequence[str] | None = None,
    boot_timeout: float | None = None,
    timeout: float | None = None,
    append: Sequence[str] = (),
) -> int | Completed:
    """Run `cmd` as root in a fresh VM booted from `kernel`; its exit status, or with
    capture=True a Completed holding status, stdout and stderr.

    Without capture, output streams to this process's stdout/stderr as it is produced; if
    those are the same file, the guest merges them so their interleaving is kept.
    """
    workdir = os.path.abspath(cwd or os.getcwd())
    if merge_stderr is None:
        merge_stderr = not capture and streams_are_same()
    request = make_request(
        list(cmd), cwd=workdir, env=env, merge_stderr=merge_stderr, vm_name="labkit-run"
    )
    with tempfile.TemporaryDirectory(prefix="labkit-vmrun-") as tmp:
        sock_path = os.path.join(tmp, "serial.sock")
        console = Path(tmp) / "console.log"
        spec, tools = boot.prepare(
            kernel, hostname="labkit-run", serial_socket=sock_path, oneshot=True,
            memory=memory, cpus=cpus, cwd=workdir, writable_cwd=True,
            rwdirs=list(rwdirs), modules=None if modules is None else list(modules),
            append=list(append),
        )
        limit = boot_timeout or boot.BOOT_TIMEOUT[spec.accel.kind]
        listener = boot.listen(sock_path)
        started: list[subprocess.Popen[bytes]] = []

        def start() -> subprocess.Popen[bytes]:
            started.append(boot.spawn(spec, tools, console))
            return started[-1]

        def stop(proc: subprocess.Popen[bytes]) -> None:
            procs.stop_group(proc.pid, proc)

        try:
            try:
                proc, conn, hello = boot.boot_until_agent(start, stop, listener, console,
                                                          limit)
            except LabkitError as exc:
                raise LabkitError(
                    exc.message, hint=f"The console log was kept in {_keep(console)}."
                ) from exc
            boot.report_warnings(hello)
            try:
                result = run_session(
                    conn, request, capture=capture, stdin_data=stdin,
                    forward_stdin=forward_stdin and stdin is None, timeout=timeout,
                )
            except VmGone as exc:
                raise LabkitError(
                    f"{exc.message}{boot.console_tail(console)}",
                    hint=f"The console log was kept in {_keep(console)}.",
                ) from exc
            finally:
                conn.close()
            _wait_poweroff(proc)
            return result if capture else result.code
        finally:
            listener.close()
            if started:
                procs.stop_group(started[-1].pid, started[-1])


def _wait_poweroff(proc: subprocess.Popen[bytes]) -> None:
    """The agent exits after EXIT and the guest powers off; give it a moment to do so."""
    poll(lambda: proc.poll() is not None, POWEROFF_WAIT)


def _keep(console: Path) -> Path:
    """Copy a failed run's console log out of the temp dir that is about to vanish."""
    dest = paths.state_dir().parent / "vm-run-console.log"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(console, dest)
    except OSError:
        return console
    return dest
