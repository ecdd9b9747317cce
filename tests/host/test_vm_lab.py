"""Labs placed in VMs through the Python API and the CLI, on a host whose kernel lacks what
they need: placement without a flag, every verb on the lab, truthful states after crashes
and interruptions, and nothing left behind.

A "keeper" lab holds the debian-6.12 VM up for the module, so most tests reuse a warm VM
(as a user's second lab on a kernel would); the crash and interruption tests use the
debian-6.1 kernel so that they can boot, kill and lose their own VM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.base import netns
from labkit.base.wait import poll, wait_until
from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import backplane, persistent
from labkit.lab import names, state
from labkit.lab.lab import Lab
from labkit.packets.capture import read_pcap
from tests import skips
from tests.conftest import LABKIT, ROOT, run_cli, unique

pytestmark = pytest.mark.vm
TIMEOUT = 900
TOPOS = ROOT / "topologies"
NEEDS_TIPC = """
name: X
nodes:
  a: {tipc: {bearers: [eth1]}}
  b: {tipc: {bearers: [eth1]}}
links:
  - endpoints: [a:eth1, b:eth1]
tipc: {net_id: 4242}
"""


@pytest.fixture(autouse=True)
def vm_tier_allowed() -> None:
    if os.environ.get("LABKIT_NO_VM") == "1":
        skips.skip("opted-out", "LABKIT_NO_VM=1: the VM tests were explicitly opted out")


def host_has_tipc() -> bool:
    from labkit.lab.placement import host_probes

    return host_probes()["tipc"].ok


def qemu_for(vm: str) -> list[str]:
    """The qemu process (pid and command line) of a VM, not vng's wrappers around it."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines()
            if line.split()[1].endswith("qemu-system-x86_64") and f"-name {vm} " in line + " "]


def write(tmp_path: Path, text: str, kernel: str | None = None) -> tuple[str, str]:
    name = unique("v")
    body = text.replace("name: X", f"name: {name}")
    if kernel:
        body = f"kernel: {kernel}\n" + body
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return str(path), name


@pytest.fixture(scope="module")
def warm_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A small TIPC lab that keeps the debian-6.12 VM up for this module's tests."""
    if host_has_tipc():
        skips.skip("host-kernel", "this host kernel has TIPC: labs are not placed in VMs here")
    path, name = write(tmp_path_factory.mktemp("keeper"), NEEDS_TIPC, "debian-6.12")
    lab = Lab.load(path).up()
    try:
        yield lab.placement.vms[0].vm
    finally:
        lab.down()


def test_cli_up_places_the_lab_and_every_verb_works(warm_vm: str, topo_file,
                                                    tmp_path: Path) -> None:
    path, name = topo_file(TOPOS / "cluster.yaml")
    up = run_cli("up", path, timeout=TIMEOUT)
    try:
        assert up.returncode == 0, up.stderr
        assert "runs in a VM with debian-6.12" in up.stderr  # announced in one line
        assert f"VM {warm_vm}" in up.stdout
        listing = {lab["name"]: lab for lab in json.loads(run_cli("status", "--json").stdout)}
        assert listing[name]["status"] == "up"
        assert listing[name]["placement"]["vms"][0]["vm"] == warm_vm
        mine = json.loads(run_cli("status", name, "--json").stdout)
        assert set(mine["nodes"]) == {"r", "n1", "n2", "n3", "n4"}
        assert all(n["present"] and n["interfaces"] for n in mine["nodes"].values())
        assert run_cli("exec", name, "n2", "--", "sh", "-c", "exit 7").returncode == 7
        piped = subprocess.run([*LABKIT, "exec", name, "n1", "--", "cat"], input="hi there\n",
                               capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
        assert piped.stdout == "hi there\n", piped.stderr  # stdin reaches the command
        links = run_cli("exec", name, "n1", "--", "tipc", "link", "list")
        assert "n1:eth1-n2:eth1: up" in links.stdout, links.stderr
        tipc = run_cli("tipc", "status", name, "--json", timeout=TIMEOUT)
        assert tipc.returncode == 0, tipc.stderr
        tnodes = json.loads(tipc.stdout)["nodes"]
        assert tnodes["n3"]["identity"] == "n3"
        # the cluster's 4 links: n1-n2, n1-n3, n2-n3 on lan1 (eth) and n3-n4 (udp, routed)
        up = {frozenset(lk["name"].replace("-", ":").split(":")[0::2])
              for info in tnodes.values() for lk in info["links"] if lk["up"]}
        assert up == {frozenset(p) for p in (("n1", "n2"), ("n1", "n3"), ("n2", "n3"),
                                             ("n3", "n4"))}, up
        # A capture lands on this machine, where it said, and holds real frames: TIPC
        # link supervision on eth1 (positive control: the count is not zero).
        pcap = tmp_path / "n2.pcap"
        cap = run_cli("capture", name, "n2", "eth1", "-w", str(pcap), "--count", "5",
                      "--duration", "60", timeout=TIMEOUT)
        assert cap.returncode == 0, cap.stderr
        frames = read_pcap(pcap.read_bytes())
        assert len(frames) == 5 and f"5 frames from n2:eth1 written to {pcap}" in cap.stderr
        # TIPC's ethertype, beside what a fresh link sends on its own under load (CI-like
        # run ci12: IPv6 router solicitations, MLD reports, ARP among the 5)
        types = [f[12:14].hex() for _, f in frames]
        assert "88ca" in types and set(types) <= {"88ca", "86dd", "0806"}, types
        again = run_cli("up", path)
        assert again.returncode == 2 and f"a lab named '{name}' is already up" in again.stderr
        forced = run_cli("up", path, "--host")
        assert forced.returncode == 2 and "tipc" in forced.stderr
    finally:
        down = run_cli("down", name, timeout=TIMEOUT)
    assert down.returncode == 0 and f"lab '{name}' removed" in down.stdout, down.stderr
    assert "stays up for other labs" in down.stdout  # the keeper still uses the VM
    assert state.load(name) is None
    assert qemu_for(warm_vm), "the shared VM must stay up while the keeper lab uses it"


def test_api_up_run_popen_call_and_down(warm_vm: str, topo_file) -> None:
    path, name = topo_file(TOPOS / "cluster.yaml")
    lab = Lab.load(path).up()
    try:
        assert not lab.placement.local and lab.placement.vms[0].vm == warm_vm
        node = lab.node("n1")
        assert node.run(["sh", "-c", "echo $0", "x"]).stdout == "x\n"
        proc = node.popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = proc.communicate(b"through the relay\n", timeout=120)
        assert (out, proc.returncode) == (b"through the relay\n", 0)
        with pytest.raises(UsageError, match="runs in VM"):
            node.socket()
        links = node.links()
        assert any(i["ifname"] == "eth1" and "198.18.1.2/24" in i["addresses"] for i in links)
        same = Lab.attach(name)
        assert same.placement == lab.placement
        tipc = same.feature_status("tipc")
        assert {lk["name"] for lk in tipc["nodes"]["n1"]["links"] if lk["up"]} >= {
            "n1:eth1-n2:eth1", "n1:eth1-n3:eth1"}
    finally:
        removed = Lab.attach(name).down()
    assert removed.namespaces and state.load(name) is None
    with pytest.raises(UsageError, match="is not up"):
        Lab.attach(name)


def test_same_name_local_and_vm_cannot_both_be_up(warm_vm: str, tmp_path: Path) -> None:
    path, name = write(tmp_path, NEEDS_TIPC)
    local = tmp_path / "local.yaml"
    local.write_text((TOPOS / "pair.yaml").read_text().replace("name: pair", f"name: {name}"))
    first = subprocess.Popen([*LABKIT, "up", path], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: state.load(name) is not None, 120, "the VM lab's record")
        second = run_cli("up", str(local), timeout=TIMEOUT)
        assert second.returncode == 2, second.stderr
        assert ("busy" in second.stderr or "being built" in second.stderr
                or "already up" in second.stderr)
        assert not netns.list_names(names.lab_prefix(name))  # nothing local was made
        assert first.wait(TIMEOUT) == 0, first.stderr.read() if first.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
        run_cli("down", name, timeout=TIMEOUT)


def test_unknown_or_bogus_kernel_is_named(tmp_path: Path) -> None:
    path, name = write(tmp_path, NEEDS_TIPC)
    for bad, says in (("bogus", "Unknown kernel bogus; near ones: debian-6.1"),
                      ("/etc/passwd", "not a bootable x86 kernel image")):
        res = run_cli("up", path, "--vm", bad)
        assert res.returncode == 2 and says in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and "no VM named" not in res.stderr
        assert state.load(name) is None


# -- crashes and interruptions: each on its own debian-6.1 VM ------------------------------


@pytest.fixture
def k61(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if host_has_tipc():
        skips.skip("host-kernel", "this host kernel has TIPC: labs are not placed in VMs here")
    path, name = write(tmp_path, NEEDS_TIPC, "debian-6.1")
    yield path, name
    run_cli("down", name, timeout=TIMEOUT)
    assert not qemu_for("lk-6-1"), "the 6.1 VM must be gone after its only lab"


@pytest.mark.parametrize("phase", ["booting", "running"])
def test_sigkill_of_up_then_status_up_and_down_tell_the_truth(
        k61: tuple[str, str], phase: str) -> None:
    """Killed while the VM boots, or once it runs (daemon start, guest build)."""
    path, name = k61
    proc = subprocess.Popen([*LABKIT, "up", path], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_until(lambda: (persistent.info("lk-6-1") or persistent.VmInfo("", "")).status
               == phase or proc.poll() is not None, TIMEOUT, f"the 6.1 VM to be {phase}",
               interval=0.1)
    assert proc.poll() is None, "up ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads(run_cli("status", "--json").stdout)
    mine = next(lab for lab in status if lab["name"] == name)
    assert mine["status"] == "interrupted", mine
    again = run_cli("up", path)
    assert again.returncode == 2 and "partly built" in again.stderr
    down = run_cli("down", name, timeout=TIMEOUT)
    assert down.returncode == 0 and down.stdout.count("\n") == 1, down.stdout
    assert "removed" in down.stdout and "nothing to remove" not in down.stdout


def test_crashed_vm_makes_the_lab_broken_and_down_cleans(k61: tuple[str, str]) -> None:
    path, name = k61
    assert run_cli("up", path, timeout=TIMEOUT).returncode == 0
    [qemu] = qemu_for("lk-6-1")
    os.kill(int(qemu.split()[0]), signal.SIGKILL)
    poll(lambda: (persistent.info("lk-6-1") or persistent.VmInfo("", "")).status == "crashed",
         60, interval=0.5)
    listed = {lab["name"]: lab for lab in json.loads(run_cli("status", "--json").stdout)}
    assert listed[name]["status"] == "broken"
    exec_ = run_cli("exec", name, "a", "--", "true")
    assert exec_.returncode == 2 and "broken" in exec_.stderr
    down = run_cli("down", name, timeout=TIMEOUT)
    assert down.returncode == 0, down.stderr
    assert "had crashed" in down.stdout and "vm start" not in down.stdout + down.stderr
    assert state.load(name) is None and persistent.info("lk-6-1") is None


def test_ctrl_c_during_up_removes_everything_and_says_so(k61: tuple[str, str]) -> None:
    path, name = k61
    proc = subprocess.Popen([*LABKIT, "up", path], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_until(lambda: persistent.info("lk-6-1") is not None or proc.poll() is not None,
               TIMEOUT, "the VM to be starting", interval=0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert "was interrupted" in err and "was removed" in err, err
    assert "Traceback" not in err and "Fatal Python error" not in err
    assert state.load(name) is None and persistent.info("lk-6-1") is None
    assert not backplane.in_use() or qemu_for("lk-6-12")  # only the warm VM may remain


def test_shell_in_a_vm_node_is_a_real_terminal(warm_vm: str, tmp_path: Path) -> None:
    """`labkit shell` on a node in a VM: a pty there (job control, `tty` answers), typed
    input reaches it, and it ends when the shell exits (not by itself)."""
    import pty
    import select

    path, name = write(tmp_path, NEEDS_TIPC)
    assert run_cli("up", path, timeout=TIMEOUT).returncode == 0
    try:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(ROOT)
            os.execv(LABKIT[0], [*LABKIT, "shell", name, "a"])
        seen = bytearray()

        def read_until(marker: bytes, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while marker not in seen and time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if ready:
                    try:
                        seen.extend(os.read(fd, 4096))
                    except OSError:
                        break
            return marker in seen

        assert read_until(f"[{name}:a]".encode(), 120), seen.decode(errors="replace")
        os.write(fd, b"tty; echo sum=$((6*7)); set -o | grep -c monitor\n")
        assert read_until(b"sum=42", 60), seen.decode(errors="replace")
        assert b"/dev/pts/" in seen and b"not a tty" not in seen
        assert b"cannot set terminal process group" not in seen
        os.write(fd, b"exit 3\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        run_cli("down", name, timeout=TIMEOUT)


def test_a_lab_reusing_a_vm_gets_its_kernel_modules(warm_vm: str) -> None:
    """The VM was booted for another lab, with that lab's modules: a lab reusing it gets
    its own loaded too (here `dummy`, which nothing else loads; control: absent before)."""
    from labkit.hosts.vmhost import VmHost

    def loaded() -> bool:
        res = persistent.exec_(warm_vm, ["cat", "/proc/modules"], capture=True, cwd="/")
        return any(line.split()[0] == "dummy" for line in res.out.splitlines())

    assert not loaded()
    host = VmHost(warm_vm, "debian-6.12", ["dummy"])
    try:
        host.start()
        assert loaded()
    finally:
        host.close()
        persistent.exec_(warm_vm, ["rmmod", "dummy"], capture=True, cwd="/")


def test_a_lab_reusing_a_vm_leaves_what_the_kernel_autoloads_to_it(warm_vm: str) -> None:
    """Modules a lab's build makes the kernel autoload (veth, bridge) are loaded at boot
    with the lab's own, for speed; in a VM already up the kernel loads them when the build
    needs them, so reusing it runs no modprobe for them (the control is the test above:
    the same module as one the lab needs is loaded)."""
    from labkit.hosts.vmhost import VmHost

    host = VmHost(warm_vm, "debian-6.12", [], preload=["dummy"])
    try:
        host.start()
        res = persistent.exec_(warm_vm, ["cat", "/proc/modules"], capture=True, cwd="/")
        assert "dummy" not in [line.split()[0] for line in res.out.splitlines()]
    finally:
        host.close()


def test_a_booting_lab_vm_loads_what_its_build_would_autoload(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A VM booted for a lab loads its features' modules and, in the same modprobe, the
    ones its build would make the kernel autoload (each a modprobe process under TCG)."""
    from labkit.hosts.vm import persistent as pers
    from labkit.hosts.vmhost import VmHost

    asked: dict[str, object] = {}

    class Booted(Exception):
        pass

    def start(name: str, **kwargs: object) -> None:
        asked.update(kwargs)
        raise Booted

    monkeypatch.setenv("LABKIT_VM_STATE_DIR", str(tmp_path))  # its lock file goes there
    monkeypatch.setattr(pers, "info", lambda name: None)
    monkeypatch.setattr(pers, "start", start)
    host = VmHost("lk-test-preload", "debian-6.12", ["tipc"], preload=["veth", "bridge"])
    with pytest.raises(Booted):
        host.start()
    assert asked["modules"] == ["tipc", "veth", "bridge"]


def test_a_vm_of_another_install_is_not_reused_under_its_labs(warm_vm: str) -> None:
    """The VM's daemon runs this install's python (a lab of ours may reuse it); a VM whose
    daemon runs another install's, with a lab of that install on it, is refused with both
    paths named, and left running (the keeper lab stands in for the other install's)."""
    from labkit.hosts.vmhost import VmHost

    host = VmHost(warm_vm, "debian-6.12", [])
    try:
        assert host._install() == sys.executable  # control: ours is reused
        host._install = lambda: "/elsewhere/.venv/bin/python"  # type: ignore[method-assign]
        with pytest.raises(LabkitError, match="another install .*/elsewhere") as exc:
            host.start()
        assert sys.executable in exc.value.message
        assert persistent.info(warm_vm).status == "running"
    finally:
        host.close()
