"""Booting real VMs: one-shot runs and a persistent VM, through the CLI as users run them.

Each boot costs ~15 s under TCG, so boots are few: one one-shot run, one persistent VM
shared by the exec tests and stopped by the last of them, and one more persistent VM
that is crashed on purpose (and also checks a port forward).

When qemu or the kernel is missing these tests FAIL with the reason; set LABKIT_NO_VM=1
to skip them explicitly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.base import procs
from labkit.base.wait import poll, wait_until
from labkit.errors import LabkitError
from labkit.hosts.vm import kernels, persistent, vng
from tests import skips

pytestmark = pytest.mark.vm

BIN = Path(sys.executable).parent
LABKIT = str(BIN / "labkit")
# As an activated venv would: `python3` in the guest is the venv's, not a pyenv shim
# (a bash script that takes seconds per call under TCG).
ENV = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
TIPC = "import socket; socket.socket(socket.AF_TIPC, socket.SOCK_RDM)"
RELEASE_SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.uname().release.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8000), H).serve_forever()
"""


@pytest.fixture(scope="session", autouse=True)
def vm_prerequisites() -> None:
    """Fail loudly (never skip silently) when VMs cannot boot, unless opted out."""
    if os.environ.get("LABKIT_NO_VM") == "1":
        skips.skip("opted-out", "LABKIT_NO_VM=1: VM tests explicitly disabled")
    if os.geteuid() != 0:
        pytest.fail("VM tests need root (run the suite with sudo) or LABKIT_NO_VM=1")
    try:
        vng.find_tools()
        kernels.resolve(kernels.DEFAULT_KERNEL)
    except LabkitError as exc:
        pytest.fail(f"cannot boot VMs here: {exc.render()} (or set LABKIT_NO_VM=1 to skip)")


def labkit(*args: str, timeout: float = 600, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [LABKIT, *args], env=ENV, stdin=subprocess.DEVNULL, text=True, timeout=timeout, **kw
    )


def qemu_pids(marker: str) -> list[int]:
    """qemu processes whose command line mentions `marker` (a VM's own socket path).

    Read from /proc: `ps` truncates qemu's very long command lines.
    """
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"qemu-system-x86_64") and any(
            marker.encode() in arg for arg in cmdline
        ):
            pids.append(int(entry))
    return pids


# -- one-shot ------------------------------------------------------------------------------


def test_run_gives_the_guests_exit_status_and_output_in_order() -> None:
    """One boot checks three things (each boot costs ~30-90 s under TCG in CI): a TIPC
    socket opens in the guest (the feature the host lacks), stdout and stderr into one
    pipe arrive interleaved exactly as at a terminal, and the exit status is the guest
    command's own (7, not 0 or 1)."""
    script = (f"python3 -c '{TIPC}' || exit 99; "
              "for i in $(seq 1 200); do echo out$i; echo err$i >&2; done; exit 7")
    res = labkit("vm", "run", "--", "sh", "-c", script, stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT)
    lines = [ln for ln in res.stdout.splitlines() if not ln.startswith("labkit:")]
    assert res.returncode == 7, res.stdout[-2000:]  # 99: no TIPC socket in the guest
    assert lines == [f"{s}{i}" for i in range(1, 201) for s in ("out", "err")]


# -- persistent ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vm_name() -> Iterator[str]:
    name = f"pytest-{os.getpid()}"
    res = labkit("vm", "start", name, "--json", capture_output=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["status"] == "running"
    yield name
    labkit("vm", "stop", name, capture_output=True)


def test_exec_three_times(vm_name: str) -> None:
    for code in (3, 0, 5):
        res = labkit("vm", "exec", vm_name, "--", "sh", "-c", f"echo run{code}; exit {code}",
                     capture_output=True)
        assert (res.returncode, res.stdout) == (code, f"run{code}\n"), res.stderr


def test_exec_json_and_tipc(vm_name: str) -> None:
    res = labkit("vm", "exec", vm_name, "--json", "--", "python3", "-c",
                 TIPC + "; print('tipc ok')", capture_output=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 0 and doc["stdout"] == "tipc ok\n"


def test_exec_api_capture_stdin_and_concurrency(vm_name: str) -> None:
    done = persistent.exec_(vm_name, ["cat"], capture=True, stdin=b"via stdin\n")
    assert (done.code, done.out) == (0, "via stdin\n")
    results: dict[int, int] = {}
    # A rendezvous that only concurrent sessions can pass: each marks its arrival, then
    # waits (bounded) until all four have arrived. Run one after another, the first
    # would give up after 60 s and exit 99.
    meet = f"/tmp/lk-meet-{vm_name}"
    script = (f"mkdir -p {meet}; touch {meet}/$0; i=0; "
              f"while [ $(ls {meet} | wc -l) -lt 4 ]; do i=$((i+1)); "
              "[ $i -gt 600 ] && exit 99; sleep 0.1; done; exit $0")

    def one(i: int) -> None:
        results[i] = persistent.exec_(vm_name, ["sh", "-c", script, str(i)], capture=True).code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {0: 0, 1: 1, 2: 2, 3: 3}  # 99 would mean they ran one by one


def test_list_then_stop_leaves_no_qemu(vm_name: str) -> None:
    listed = json.loads(labkit("vm", "list", "--json", capture_output=True).stdout)
    assert {"name": vm_name, "status": "running"}.items() <= next(
        v for v in listed if v["name"] == vm_name
    ).items()
    state = persistent._dir(vm_name)
    pgid = json.loads((state / "state.json").read_text())["pgid"]
    marker = str(state / "serial.sock")
    qemu = qemu_pids(marker)
    assert qemu, "the VM's qemu should be running before stop"
    res = labkit("vm", "stop", vm_name, capture_output=True)
    assert res.returncode == 0, res.stderr
    assert qemu_pids(marker) == [] and procs.group_members(pgid) == []
    # Gone when `stop` says "stopped": not even a zombie waiting for PID 1 to reap it
    # (qemu's command line is empty then, so qemu_pids would not see it).
    assert [p for p in qemu if os.path.exists(f"/proc/{p}")] == []
    assert not state.exists()


def test_crashed_vm_is_reported_and_cleaned() -> None:
    """Kill qemu under a running VM: list says crashed, nothing is left running, stop cleans.

    The same boot checks a port forward to a server in the guest.
    """
    name = f"pytest-crash-{os.getpid()}"
    port = free_port()
    res = labkit("vm", "start", name, "--forward", f"{port}:8000", capture_output=True)
    assert res.returncode == 0, res.stderr
    state = persistent._dir(name)
    try:
        server = subprocess.Popen(
            [LABKIT, "vm", "exec", name, "--", "python3", "-c", RELEASE_SERVER],
            env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        body = _fetch(f"http://127.0.0.1:{port}/", timeout=120)
        assert body.strip() == kernels.resolve(kernels.DEFAULT_KERNEL).version
        marker = str(state / "serial.sock")
        [qemu] = qemu_pids(marker)
        os.kill(qemu, signal.SIGKILL)
        assert server.wait(60) != 0  # the exec learns that its VM died
        def status() -> str:
            return next(v.status for v in persistent.list_vms() if v.name == name)

        poll(lambda: status() == "crashed", 60, interval=0.5)
        assert status() == "crashed"
        assert qemu_pids(marker) == []
        pgid = json.loads((state / "state.json").read_text())["pgid"]
        # only the supervisor may linger, while exiting
        poll(lambda: not procs.group_members(pgid), 10)
        assert procs.group_members(pgid) == []
        res = labkit("vm", "exec", name, "--", "true", capture_output=True)
        assert res.returncode == 1 and "crashed" in res.stderr
    finally:
        res = labkit("vm", "stop", name, capture_output=True)
    assert res.returncode == 0 and not state.exists()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fetch(url: str, timeout: float) -> str:
    """Retry until the guest's server is up (Python starts slowly under TCG)."""
    def get() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.read().decode()
        except OSError:
            return None

    return wait_until(get, timeout, f"an answer from {url}", interval=1)
