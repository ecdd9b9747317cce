"""`labkit notebook` killed by SIGKILL (no handler runs) takes JupyterLab with it: nothing
keeps serving on its port, no server process is left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (scripts/setup.sh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigkilled_notebook_leaves_no_server(tmp_path: Path) -> None:
    from labkit.base import procs
    from labkit.base.wait import wait_until
    from labkit.cli.notebook import descendants

    port = _free_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    cli = subprocess.Popen([sys.executable, "-m", "labkit.cli.main", "notebook", "--port",
                            str(port), "--dir", str(tmp_path / "labs")], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    below: list[tuple[int, int]] = []
    try:
        # Positive control: the server runs below labkit and answers on its port.
        wait_until(lambda: _serving(port) or cli.poll() is not None, 180,
                   f"JupyterLab to listen on port {port}")
        assert cli.poll() is None, "labkit notebook exited at start"
        below = descendants(cli.pid)
        assert below, "no JupyterLab process below labkit notebook"
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        wait_until(lambda: not _serving(port) and
                   not [p for p, started in below if procs.alive(p, started)], 60,
                   "JupyterLab to exit after labkit notebook was SIGKILLed",
                   detail=lambda: f"still running: "
                                  f"{[p for p, s in below if procs.alive(p, s)]}")
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
        left = [p for p, started in below if procs.alive(p, started)]
        if left:
            procs.stop(left)
