"""The helper primitive (labkit.base.helper): a process that says it is ready, or a clear
error with its own last words; gone after its context, pass or fail."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from labkit.base import procs
from labkit.base.helper import HelperFailed, start


class Here:
    """A spawner that runs the process on this machine (a lab Node is another)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(cmd, **kwargs)
        self.started.append(proc)
        return proc


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def gone(proc: subprocess.Popen[Any]) -> bool:
    """Ended and reaped: no process, not even a zombie, holds its pid."""
    return proc.returncode is not None and procs.stat(proc.pid) is None


def test_ready_line_returns_and_the_process_is_gone_after() -> None:
    here = Here()
    t0 = time.monotonic()
    with start(here, py("import sys, time; print('booting'); print('{\"ready\": true}', "
                        "flush=True); print('after', flush=True); time.sleep(60)"),
               what="the test server", ready='"ready"', timeout=30, text=True) as helper:
        assert helper.line == '{"ready": true}'
        assert helper.proc.poll() is None  # still serving
        assert time.monotonic() - t0 < 30  # it did not wait for the deadline
        pid = helper.proc.pid
        assert procs.alive(pid)  # positive control for the check below
    assert gone(helper.proc)
    assert here.started == [helper.proc]


def test_ready_on_stderr_and_a_callable() -> None:
    here = Here()
    code = "import sys, time; sys.stderr.write('ready\\n'); sys.stderr.flush(); time.sleep(60)"
    with start(here, py(code), what="the capture", on="stderr",
               ready=lambda line: line == "ready", timeout=30) as helper:
        assert helper.line == "ready"
    assert gone(helper.proc)


def test_death_before_ready_gives_its_stderr_tail() -> None:
    here = Here()
    code = ("import sys; print('line one', file=sys.stderr); "
            "print('OSError: [Errno 98] Address already in use', file=sys.stderr); sys.exit(3)")
    t0 = time.monotonic()
    with pytest.raises(HelperFailed) as exc:
        start(here, py(code), what="the traffic server on h2", timeout=60)
    assert time.monotonic() - t0 < 60  # seen at its exit, not at the deadline
    err = exc.value
    assert err.message == ("the traffic server on h2 did not start: OSError: [Errno 98] "
                           "Address already in use.")
    assert err.tail.splitlines() == ["line one", "OSError: [Errno 98] Address already in use"]
    assert gone(here.started[0])


def test_silent_death_names_the_exit_status() -> None:
    here = Here()
    with pytest.raises(HelperFailed) as exc:
        start(here, py("import sys; sys.exit(7)"), what="the agent", timeout=60)
    assert exc.value.message == ("the agent did not start: it exited with status 7 before "
                                 "its ready line.")
    assert gone(here.started[0])


def test_a_line_that_is_not_ready_is_kept_for_the_caller() -> None:
    """A helper that reports its own failure on the ready stream ({"ready": false, ...})."""
    here = Here()
    code = "print('{\"ready\": false, \"error\": \"cannot listen\"}')"
    with pytest.raises(HelperFailed) as exc:
        start(here, py(code), what="the answering side", ready='"ready": true', timeout=60)
    assert '"error": "cannot listen"' in exc.value.said
    assert "cannot listen" in exc.value.message
    assert gone(here.started[0])


def test_deadline_is_a_clear_error_and_the_process_is_killed() -> None:
    here = Here()
    code = "import sys, time; print('warming up', file=sys.stderr, flush=True); time.sleep(60)"
    with pytest.raises(HelperFailed) as exc:
        start(here, py(code), what="the slow server", timeout=1.0)
    assert exc.value.message == ("the slow server did not start: warming up (no ready line "
                                 "within 1 s).")
    assert gone(here.started[0])


def test_garbage_without_newline_is_bounded() -> None:
    here = Here()
    code = "import sys, time; sys.stdout.write('x' * 200000); sys.stdout.flush(); time.sleep(60)"
    with pytest.raises(HelperFailed) as exc:
        start(here, py(code), what="the agent", timeout=30)
    assert "without a ready line" in exc.value.message
    assert gone(here.started[0])


def test_process_is_gone_when_the_body_fails() -> None:
    here = Here()
    with pytest.raises(RuntimeError), start(
            here, py("import time; print('ready', flush=True); time.sleep(60)"),
            what="the server", timeout=30):
        raise RuntimeError("the client failed")
    assert gone(here.started[0])


def test_finish_returns_what_came_after_the_ready_line() -> None:
    here = Here()
    code = "print('ready', flush=True); print('{\"bytes\": 5}')"
    with start(here, py(code), what="the server", timeout=30, text=True) as helper:
        out, _ = helper.finish(timeout=30)
    assert (helper.early + out).strip().splitlines()[-1] == '{"bytes": 5}'


def test_leftover_is_killed_at_interpreter_exit(tmp_path) -> None:
    """A helper whose context never ends dies when the interpreter that started it exits."""
    script = tmp_path / "leave.py"
    script.write_text(
        "import subprocess, sys\n"
        "from labkit.base.helper import start\n"
        "class H:\n"
        "    def popen(self, cmd, **kw):\n"
        "        return subprocess.Popen(cmd, **kw)\n"
        "h = start(H(), [sys.executable, '-c', "
        "'import time; print(\"ready\", flush=True); time.sleep(120)'], what='x', "
        "timeout=30)\n"
        "print(h.proc.pid, flush=True)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.strip())
    st = procs.stat(pid)
    assert st is None or st.zombie, f"helper {pid} outlived its interpreter"


def test_through_a_lab_node_gone_after_its_context(lab_up) -> None:
    """Through Node.popen, the process runs in the node's namespace."""
    from pathlib import Path

    lab = lab_up(Path(__file__).parents[2] / "topologies" / "routed.yaml")
    node = lab.node(sorted(lab.topo.nodes)[0])
    code = ("import os; print('ready', os.readlink('/proc/self/ns/net'), flush=True); "
            "import time; time.sleep(60)")
    with start(node, py(code), what=f"the helper on {node.name}", timeout=60,
               text=True) as helper:
        own = subprocess.run(["readlink", "/proc/self/ns/net"], capture_output=True,
                             text=True).stdout.strip()
        assert helper.line.split()[1] != own  # in the node, not in this namespace
    assert gone(helper.proc)


def test_probe_readiness_for_a_tool_without_a_ready_line(tmp_path) -> None:
    """iperf3 says nothing when it listens: readiness is seen from outside (a probe)."""
    here = Here()
    flag = tmp_path / "listening"
    code = f"import pathlib, time; time.sleep(0.3); pathlib.Path({str(flag)!r}).touch(); " \
           "time.sleep(60)"
    with start(here, py(code), what="the tool", probe=flag.exists, timeout=30,
               stdout=subprocess.DEVNULL) as helper:
        assert flag.exists() and helper.proc.poll() is None
    assert gone(helper.proc)
    # it dies before the probe holds: its stderr's last line, at once
    t0 = time.monotonic()
    with pytest.raises(HelperFailed) as exc:
        start(here, py("import sys; sys.exit('iperf3: error - unable to start listener')"),
              what="iperf3 on b", probe=lambda: False, timeout=60, stdout=subprocess.DEVNULL)
    assert exc.value.message == ("iperf3 on b did not start: iperf3: error - unable to start "
                                 "listener.")
    assert time.monotonic() - t0 < 60
    assert gone(here.started[-1])
    # the probe never holds: the deadline
    with pytest.raises(HelperFailed, match="not ready within 0.5 s"):
        start(here, py("import time; time.sleep(60)"), what="the tool", probe=lambda: False,
              timeout=0.5, stdout=subprocess.DEVNULL)
    assert gone(here.started[-1])
