"""labkit starts without pyroute2's eager package import (every netlink family it has),
and code outside labkit still sees the whole package (labkit/base/lazy_pyroute2.py)."""

from __future__ import annotations

import subprocess
import sys

PROBE = "import sys; {setup}; print('pyroute2.ndb.main' in sys.modules)"


def loads_ndb(setup: str) -> bool:
    res = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip() == "True"


def test_labkit_starts_without_the_whole_of_pyroute2() -> None:
    assert loads_ndb("import pyroute2")  # control: the package's own __init__ loads NDB
    assert not loads_ndb("import labkit.cli.main, labkit.lab.build, labkit.lab.lan, "
                         "labkit.features.tipc.client, labkit.capabilities")


def test_the_whole_package_is_there_for_code_outside_labkit() -> None:
    assert loads_ndb("import labkit.cli.main; from pyroute2 import NDB, IPRoute; "
                     "import pyroute2.iproute; assert IPRoute is pyroute2.iproute.IPRoute; "
                     "from pyroute2 import config; assert pyroute2.__version__")
