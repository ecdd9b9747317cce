"""Input that must not hurt the machine: every bad file, document, value and message gets a
located, one-paragraph refusal from a process held to 1 GiB of address space.

Each case runs labkit in a subprocess under RLIMIT_AS = 1 GiB with a generous timeout
(TIMEOUT): a labkit that reads /dev/zero, blocks on a FIFO or walks a huge document fails
the test by running out of memory or time, never by a timed assertion. The seconds each
case took are printed (`pytest -s` shows them). Positive controls: files of moderate size
and legitimate values still load under the same limit.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, unique

MEMORY = 1 << 30  # RLIMIT_AS for every labkit process here
TIMEOUT = 20.0    # generous: a refusal takes well under a second of CPU


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Ran:
    returncode: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return (self.out + self.err).replace("\n", " ")


def labkit(*args: str, name: str) -> Ran:
    """`labkit ARGS` under the memory limit; fails the test past TIMEOUT."""
    started, cpu = time.monotonic(), _children_cpu()
    try:
        done = subprocess.run([sys.executable, "-m", "labkit.cli.main", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=TIMEOUT,
                              preexec_fn=_limit_memory, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: labkit {' '.join(args)} was still running after {TIMEOUT:g} s")
    took = time.monotonic() - started
    print(f"\nmeasured: {name}: {took:.2f} s wall, {_children_cpu() - cpu:.2f} s CPU "
          f"(exit {done.returncode})")
    return Ran(done.returncode, done.stdout, done.stderr, took)


def refused(ran: Ran, where: str, *words: str) -> None:
    """A usage error (exit 2), no traceback, located at `where`, saying each of words."""
    assert ran.returncode == 2, ran.text
    assert "Traceback" not in ran.text, ran.text
    assert where in ran.text, ran.text
    for word in words:
        assert word in ran.text, ran.text


PAIR = """\
name: {name}
nodes:
  a: {{}}
  b: {{}}
links:
  - endpoints: [a:eth1, b:eth1]
"""


# -- what the path names ------------------------------------------------------------------


def test_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    """The reported global OOM: a topology path that is a symlink to /dev/zero."""
    path = tmp_path / "x.yaml"
    path.symlink_to("/dev/zero")
    ran = labkit("validate", str(path), name="symlink to /dev/zero")
    refused(ran, f"{path}:", "character device", "not a regular file", "/dev/zero")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    os.mkfifo(path)  # nobody ever writes: opening it to read would block for ever
    ran = labkit("validate", str(path), name="FIFO")
    refused(ran, f"{path}:", "FIFO", "not a regular file")


def test_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.mkdir()
    ran = labkit("validate", str(path), name="directory")
    refused(ran, f"{path}:", "the topology file is a directory")


def test_symlink_to_a_regular_file_still_loads(tmp_path: Path) -> None:
    """Positive control for the three above: a symlink is fine when it names a file."""
    real = tmp_path / "real.yaml"
    real.write_text(PAIR.format(name="t"))
    (tmp_path / "x.yaml").symlink_to(real)
    ran = labkit("validate", str(tmp_path / "x.yaml"), name="symlink to a file")
    assert ran.returncode == 0, ran.text


# -- how large the document is ------------------------------------------------------------


def _many_nodes(path: Path, count: int) -> None:
    with path.open("w") as fh:
        fh.write("name: t\nnodes:\n")
        fh.writelines(f"  n{i}: {{}}\n" for i in range(count))


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """The reported 200,000-node file (2.6 MiB; 28.7 s to be refused)."""
    path = tmp_path / "big.yaml"
    _many_nodes(path, 200_000)
    ran = labkit("validate", str(path), name="200,000 nodes (2.6 MiB)")
    refused(ran, f"{path}:", "labkit reads at most 2.0 MiB")


def test_too_many_values_are_refused_while_scanning(tmp_path: Path) -> None:
    """Under the size bound (0.3 MiB) but 150,000 values: refused at the value past the
    bound, with its line, instead of validating 150,000 items."""
    path = tmp_path / "values.yaml"
    path.write_text(PAIR.format(name="t") + "checks: [" + ", ".join(["0"] * 150_000) + "]\n")
    ran = labkit("validate", str(path), name="150,000 values")
    refused(ran, f"{path}:7:", "more than 100,000 values")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    """600 nested lists: the composer and the walker recurse per level."""
    path = tmp_path / "deep.yaml"
    path.write_text(PAIR.format(name="t") + "checks: " + "[" * 600 + "]" * 600 + "\n")
    ran = labkit("validate", str(path), name="600 levels")
    refused(ran, f"{path}:7:", "more than 64 levels deep")


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    """Ten levels of ten aliases (10^10 values once expanded). Regression guard: refused
    before this change too (the alias counting moved from the composer to the scan)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path = tmp_path / "laughs.yaml"
    path.write_text(PAIR.format(name="t") + "x:\n" + "".join(f"  {ln}\n" for ln in lines))
    ran = labkit("validate", str(path), name="billion laughs")
    refused(ran, f"{path}:", "billion laughs")


def test_a_large_valid_file_still_loads(tmp_path: Path) -> None:
    """Positive control: 2,000 nodes on one LAN, each with a sysctl and a route (0.2 MiB,
    ~30,000 values) loads under the same limit."""
    path = tmp_path / "large.yaml"
    with path.open("w") as fh:
        fh.write("name: large\nnodes:\n")
        fh.writelines(f"  n{i}:\n    sysctls: {{net.ipv4.conf.all.rp_filter: 0}}\n"
                      f"    routes:\n      - {{to: 198.51.100.0/24, via: 198.18.0.1}}\n"
                      for i in range(2000))
        fh.write("lans:\n  lan1:\n    ipv4: 198.18.0.0/20\n    endpoints: [" +
                 ", ".join(f"n{i}:eth1" for i in range(2000)) + "]\n")
    ran = labkit("validate", str(path), name="2,000 valid nodes")
    assert ran.returncode == 0, ran.text[:2000]
    assert "2000 nodes" in ran.text


# -- values that reach a command line or a path ---------------------------------------------


def _topology(tmp_path: Path, extra_node: str = "", sysctls: str = "",
              endpoints: str = "[a:eth1, b:eth1]") -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nnodes:\n  a:\n    sysctls: {{{sysctls}}}\n  b: {{}}\n"
                    f"{extra_node}links:\n  - endpoints: {endpoints}\n")
    return path


@pytest.mark.parametrize(("sysctls", "words"), [
    ('net.ipv4.conf.all.forwarding: "1; rm -rf /"', "is not a value this sysctl takes"),
    ('net.ipv4.tcp_congestion_control: "$(reboot)"', "is not a value this sysctl takes"),
    # a name valid for another key, several numbers for a one-number key, out of range
    ("net.ipv4.conf.all.forwarding: cubic", "forwarding takes one whole number"),
    ('net.ipv4.ip_forward: "1 2 3"', "ip_forward takes one whole number"),
    ("net.ipv4.ip_forward: 99999999999999999999", "is not a value this sysctl takes"),
    ("net.core.default_qdisc: cubic", "default_qdisc takes one name"),
    ("net.core: 1", "is not a network sysctl"),
    ("net.ipv4.conf.-all.forwarding: 1", "is not a network sysctl"),
], ids=["shell-in-value", "command-substitution", "word-of-another-key", "vector-for-one",
        "too-big", "qdisc-not-congestion", "a-directory", "leading-dash"])
def test_sysctl_shapes_are_checked_at_validation(tmp_path: Path, sysctls: str,
                                                 words: str) -> None:
    path = _topology(tmp_path, sysctls=sysctls)
    ran = labkit("validate", str(path), name=f"sysctl {sysctls}")
    refused(ran, f"{path}:4:", words)


def test_legitimate_sysctl_values_still_validate(tmp_path: Path) -> None:
    """Positive control: a number, a vector of numbers, a word, and a '/' name."""
    path = _topology(tmp_path, sysctls="net.ipv4.conf.all.forwarding: 1, "
                     "net.ipv4.tcp_rmem: '4096 131072 6291456', "
                     "net.ipv4.tcp_congestion_control: cubic, "
                     "net/ipv4/conf/eth1.100/rp_filter: 2, "
                     "net.ipv4.ip_local_port_range: '32768 60999', "
                     "net.core.default_qdisc: fq, "
                     "net.ipv4.tcp_allowed_congestion_control: 'reno cubic'",
                     endpoints="[a:eth1.100, b:eth1]")
    ran = labkit("validate", str(path), name="valid sysctls")
    assert ran.returncode == 0, ran.text


@pytest.mark.parametrize(("endpoints", "line_words"), [
    ("[a:-eth1, b:eth1]", "not a valid interface name"),
    ("[a:eth1, 'b:et$h1']", "not a valid interface name"),
    ("[a:eth1, b:ethernet-number-1]", "Linux allows at most 15"),
], ids=["leading-dash", "dollar", "too-long"])
def test_interface_names_are_checked(tmp_path: Path, endpoints: str, line_words: str) -> None:
    path = _topology(tmp_path, endpoints=endpoints)
    ran = labkit("validate", str(path), name=f"interface {endpoints}")
    refused(ran, f"{path}:7:", line_words)


@pytest.mark.parametrize("node", ['"h1\\n"', '"h1/../../etc"', '"ñódo"', "x" * 1000],
                         ids=["newline", "slashes", "unicode", "1000-chars"])
def test_node_names_are_checked(tmp_path: Path, node: str) -> None:
    path = _topology(tmp_path, extra_node=f"  {node}: {{}}\n")
    ran = labkit("validate", str(path), name=f"node name {node[:20]}")
    refused(ran, f"{path}:6:", "is not a valid name")
    assert len(ran.text) < 1000, "the name was echoed back whole"


@pytest.mark.parametrize("text", ['"\\e[2J\\e[31mall fine"', '"abc\\u202edcba"'],
                         ids=["escape-sequence", "bidi-override"])
def test_descriptions_cannot_drive_the_terminal(tmp_path: Path, text: str) -> None:
    """`labkit up` prints the description: no escape sequences or bidi overrides."""
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\ndescription: {text}\n" + PAIR.format(name="t").split("\n", 1)[1])
    ran = labkit("validate", str(path), name=f"description {text[:12]}")
    refused(ran, f"{path}:2:", "control character")


def test_tipc_key_file_that_is_a_fifo(tmp_path: Path) -> None:
    """A key_file (read at validation to check it) that is a FIFO nobody writes."""
    os.mkfifo(tmp_path / "key")
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes:\n  a: {tipc: {bearers: [eth1]}}\n"
                    "  b: {tipc: {bearers: [eth1]}}\nlinks:\n  - endpoints: [a:eth1, b:eth1]\n"
                    "tipc:\n  encryption: {mode: master, key_file: key}\n")
    ran = labkit("validate", str(path), name="TIPC key_file FIFO")
    refused(ran, f"{path}:8:", "FIFO", "not a regular file")


# -- other files labkit reads --------------------------------------------------------------


def test_scenario_file_that_is_dev_zero(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.symlink_to("/dev/zero")
    ran = labkit("repro", "validate", str(path), name="scenario /dev/zero")
    refused(ran, f"{path}:", "the scenario file is a character device")


def test_scenario_topology_that_is_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "topo.yaml")
    path = tmp_path / "s.yaml"
    path.write_text("scenario: s\ntitle: t\nsource: {report: r}\ntopology: topo.yaml\n"
                    "kernels: {host: {expect: reproduced}}\nsteps: []\n")
    ran = labkit("repro", "validate", str(path), name="scenario topology FIFO")
    refused(ran, f"{path}:4:", "FIFO")


def test_exercises_file_that_is_a_fifo(tmp_path: Path) -> None:
    """The exercises loader, in a process of its own under the same limit."""
    path = tmp_path / "ex.yaml"
    os.mkfifo(path)
    code = ("import sys\nfrom labkit.errors import LabkitError\n"
            "from labkit.exercises import loader\n"
            "try:\n    loader.load(sys.argv[1])\nexcept LabkitError as exc:\n"
            "    print(exc.render())\n    sys.exit(2)\n")
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, text=True,
                              capture_output=True, timeout=TIMEOUT, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading a FIFO as exercises file still ran after {TIMEOUT:g} s")
    print(f"\nmeasured: exercises FIFO: {time.monotonic() - started:.2f} s wall")
    refused(Ran(done.returncode, done.stdout, done.stderr, 0.0), f"{path}:", "FIFO")


def test_bundle_that_is_a_fifo(tmp_path: Path) -> None:
    """`labkit repro rerun` on a .tar.gz path that is a FIFO nobody writes."""
    path = tmp_path / "bundle.tar.gz"
    os.mkfifo(path)
    ran = labkit("repro", "rerun", str(path), "--out", str(tmp_path / "out"),
                 name="bundle FIFO")
    refused(ran, f"{path}:", "FIFO")


@pytest.fixture
def state_file() -> Iterator[tuple[str, Path]]:
    """A lab name and the path of its state file, removed afterwards."""
    from labkit.lab import state

    name = unique("bad")
    path = Path(state.state_path(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    yield name, path
    if path.exists() or path.is_symlink():
        path.unlink()


@pytest.mark.needs_root
def test_state_file_that_is_a_fifo(state_file: tuple[str, Path]) -> None:
    name, path = state_file
    os.mkfifo(path)
    ran = labkit("status", name, name="state file FIFO")
    refused(ran, f"{path}:", "FIFO")


@pytest.mark.needs_root
def test_state_file_that_is_garbage(state_file: tuple[str, Path]) -> None:
    """JSON, but not an object: the lab is unknown (as with unparsable JSON), not a
    traceback; and `down` still removes it."""
    name, path = state_file
    path.write_text("[1, 2, 3]")
    ran = labkit("status", name, name="state file garbage")
    assert "Traceback" not in ran.text, ran.text
    assert ran.returncode in (0, 1, 2), ran.text
    ran = labkit("down", name, name="down with garbage state")
    assert ran.returncode == 0 and "Traceback" not in ran.text, ran.text
    assert not path.exists()


# -- the guest daemon fed garbage ----------------------------------------------------------


@pytest.fixture
def guestd(tmp_path: Path) -> Iterator[str]:
    """labkit's guest daemon serving on a socket here, under the memory limit."""
    from labkit.base.wait import wait_until

    sock = str(tmp_path / "run" / "guestd.sock")
    proc = subprocess.Popen([sys.executable, "-m", "labkit.hosts.guestd", "--socket", sock],
                            cwd=ROOT, preexec_fn=_limit_memory, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_until(lambda: os.path.exists(sock) or proc.poll() is not None, 30,
                   "the guest daemon's socket")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield sock
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _exchange(sock_path: str, data: bytes, name: str) -> dict:
    """Send data (stopping early if the daemon closes), then read one reply line."""
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(sock_path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: the reply is waiting
        reply = b""
        try:
            while not reply.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            pytest.fail(f"{name}: no reply within {TIMEOUT:g} s")
    print(f"\nmeasured: {name}: {time.monotonic() - started:.2f} s")
    assert reply, f"{name}: the daemon closed without a reply"
    return json.loads(reply)


def test_guestd_refuses_an_endless_line(guestd: str) -> None:
    """17 MiB without a newline (the daemon reads at most 16 MiB per request)."""
    reply = _exchange(guestd, b"x" * (17 << 20), "guestd endless line")
    assert reply["error"]["type"] == "UsageError", reply
    assert "longer than" in reply["error"]["message"], reply


@pytest.mark.parametrize("line", [b"[1, 2]\n", b'{"fn": 5}\n', b'{"fn": "x", "args": 7}\n',
                                  b"[" * 100_000 + b"\n"],
                         ids=["list", "fn-not-text", "args-not-list", "deep-json"])
def test_guestd_refuses_malformed_requests(guestd: str, line: bytes) -> None:
    reply = _exchange(guestd, line, f"guestd {line[:12]!r}")
    assert reply["error"]["type"] == "UsageError", reply
    assert reply["error"]["message"].startswith("refusing a request"), reply


def test_guestd_still_answers_a_good_request(guestd: str) -> None:
    """Positive control: the same daemon answers ping."""
    reply = _exchange(guestd, b'{"fn": "labkit.hosts.guestd:ping", "lab": null}\n', "ping")
    assert reply["ok"] == "pong" and "error" not in reply  # "took": the guest-side seconds
