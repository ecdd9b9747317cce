"""Shared fixtures: unique lab names, guaranteed teardown, and a leak check per test.

Every lab a test makes is removed when the test ends, pass or fail; a test that leaves a
namespace behind fails (the check runs after the fixture teardown). Tests that make kernel
objects are marked `needs_root` (tests using `lab_up`, and the kernel tier, are marked
automatically): without root they are skipped with the reason, so pure byte and packet
tests still run; under CI (CI or LABKIT_REQUIRE_ROOT set) they fail instead, as does every
skip that is not one of the skips by design listed in tests/skips.py.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import skips

ROOT = Path(__file__).resolve().parent.parent
LABKIT = [sys.executable, "-m", "labkit.cli.main"]


ROOT_REASON = ("needs root: it creates network namespaces (run the tests as root, e.g. "
               "sudo bash scripts/test.sh)")
# Fixtures whose tests make kernel objects, so need root whatever their markers say.
ROOT_FIXTURES = {"lab_up", "scratch_ns"}


def pytest_configure(config: pytest.Config) -> None:
    # A run started in the background of a shell without job control (`cmd &` in a script,
    # nohup) inherits SIGINT ignored, and so would every `labkit` the tests start: their
    # Ctrl-C tests would then test nothing and fail. A user's terminal delivers SIGINT;
    # a handled signal is reset to its default at exec, so the children get it too.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers", "needs_root: makes namespaces or other kernel objects; skipped with the "
                   "reason when not root, and a failure instead under CI")


def must_be_root() -> bool:
    """CI runs as root: there a test that would be skipped for want of root fails instead."""
    return bool(os.environ.get("CI") or os.environ.get("LABKIT_REQUIRE_ROOT"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kernel = item.get_closest_marker("kernel") is not None
        if kernel or ROOT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_root)
        if item.get_closest_marker("vm") is not None:
            # a new list: parametrized cases of one test share the old one
            item.fixturenames = ["session_vm", *item.fixturenames]  # type: ignore[attr-defined]


SESSION_VM_LAB = """
name: X
description: holds the debian-6.12 VM for the test session (tests/conftest.py)
kernel: debian-6.12
nodes:
  a: {tipc: {bearers: [eth1]}}
  b: {tipc: {bearers: [eth1]}}
links:
  - endpoints: [a:eth1, b:eth1]
tipc: {net_id: 4243}
"""
SESSION_VM_NAME: list[str] = []  # the holder lab's name, once it is up


@pytest.fixture(scope="session")
def session_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """One debian-6.12 VM for every VM test of the session: a tiny lab holds it from the
    first VM test to the end, so each module and notebook starts warm (as a user's second
    lab on a kernel does) instead of booting again. Tests of the VM's own life use the
    debian-6.1 kernel or VMs of their own. None where no VM is wanted or possible."""
    if os.environ.get("LABKIT_NO_VM") == "1" or os.geteuid() != 0:
        yield None
        return
    from labkit.hosts.vm import kernels
    from labkit.lab.placement import host_probes

    if host_probes()["tipc"].ok or not kernels.cached("debian-6.12"):
        yield None  # labs run here, or the tests themselves say the kernel is missing
        return
    from labkit.lab.lab import Lab

    name = unique("keep")
    path = tmp_path_factory.mktemp("session-vm") / f"{name}.yaml"
    path.write_text(SESSION_VM_LAB.replace("name: X", f"name: {name}"))
    lab = Lab.load(str(path)).up()
    SESSION_VM_NAME.append(name)
    try:
        yield lab.placement.vms[0].vm
    finally:
        SESSION_VM_NAME.clear()
        lab.down()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_root") is None or os.geteuid() == 0:
        return
    if must_be_root():
        pytest.fail(f"{ROOT_REASON}; CI must run them as root", pytrace=False)
    pytest.skip(ROOT_REASON)


def require_root() -> None:
    """For a fixture that makes namespaces itself: the same rule as the needs_root marker."""
    if os.geteuid() == 0:
        return
    if must_be_root():
        pytest.fail(f"{ROOT_REASON}; CI must run them as root", pytrace=False)
    pytest.skip(ROOT_REASON)


def _fail_undesigned_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under CI, a skip of either tier that is not in tests/skips.py's list is a failure:
    a missing tool or kernel, a missing root, or a probe that says no is a set-up or labkit
    defect, not a reason for CI to stay green."""
    if not (report.skipped and must_be_root()) or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if skips.by_design(reason):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI, where only the skips by design of tests/skips.py "
                       f"are allowed: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_undesigned_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_undesigned_skip(outcome.get_result())


OURS: set[str] = set()  # lab names this test process made: leaks are judged only on them


def lab_namespaces() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("lk-")}
    except FileNotFoundError:
        return set()


def our_namespaces() -> set[str]:
    from labkit.lab import names

    return {n for n in lab_namespaces() if names.lab_of(n) in OURS}


@pytest.fixture(autouse=True)
def no_leftover_namespaces() -> Iterator[None]:
    """Other runs (or a user's labs) may share the machine: only our labs count."""
    before = our_namespaces()
    yield
    left = our_namespaces() - before
    if left:
        from labkit.lab import names
        from labkit.lab.lab import down

        for lab in {names.lab_of(ns) for ns in left}:
            down(lab)  # clean up for the next test, then fail this one
        pytest.fail(f"test left namespaces behind: {sorted(left)}")


def unique(prefix: str = "t") -> str:
    name = f"{prefix}{secrets.token_hex(3)}"
    OURS.add(name)
    return name


def renamed(path: str | Path, name: str) -> str:
    """A topology file's text with its lab name replaced (so tests never collide)."""
    text = Path(path).read_text()
    return re.sub(r"^name:.*$", f"name: {name}", text, count=1, flags=re.M)


@pytest.fixture
def topo_file(tmp_path: Path) -> Callable[..., tuple[str, str]]:
    """Write a renamed copy of a topology; returns (path, lab name)."""

    def make(source: str | Path | None = None, text: str | None = None,
             prefix: str = "t") -> tuple[str, str]:
        name = unique(prefix)
        body = renamed(source, name) if source else re.sub(
            r"^name:.*$", f"name: {name}", text or "", count=1, flags=re.M)
        path = tmp_path / f"{name}.yaml"
        path.write_text(body)
        return str(path), name

    return make


def labs_brought_up(topo_file: Callable[..., tuple[str, str]], labs: list[Any],
                    **up_kwargs: Any) -> Iterator[Callable[..., Any]]:
    """lab_up's body: `up(source|text)` builds a lab through the API with `up_kwargs`
    (where it is placed), and every lab made goes down afterwards, pass or fail."""
    from labkit.lab.lab import Lab

    def up(source: str | Path | None = None, text: str | None = None) -> Lab:
        path, _ = topo_file(source, text)
        lab = Lab.load(path)
        labs.append(lab)
        return lab.up(**up_kwargs)

    try:
        yield up
    finally:
        for lab in labs:
            lab.down()


@pytest.fixture
def lab_up(topo_file: Callable[..., tuple[str, str]]) -> Iterator[Callable[..., object]]:
    """Bring labs up through the API; they are always brought down afterwards."""
    yield from labs_brought_up(topo_file, [])


def run_cli(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([*LABKIT, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, **kw)  # type: ignore[call-overload]


@pytest.fixture
def scratch_ns() -> Iterator[str]:
    """A bare namespace with `lo` up, for socket-level tests of one kernel mechanism; gone
    at the end, pass or fail."""
    from labkit.base import netns

    name = f"lk-scratch-{os.getpid()}"
    netns.create(name)
    try:
        with netns.entered(name):
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        netns.delete(name)
    assert not netns.exists(name)
