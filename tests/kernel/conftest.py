"""The kernel tier runs inside a VM, once per kernel (scripts/test.sh): a test that needs a
capability this kernel lacks is skipped with the kernel and the capability named, so the
summary shows what ran where and nothing is skipped silently.

    @pytest.mark.needs("handshake")   # capability names as `labkit doctor` prints them
"""

from __future__ import annotations

import os
from functools import cache

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*caps): kernel capabilities the test needs")


@cache
def _probes() -> dict[str, object]:
    from labkit.hosts.doctor import probe_all

    return probe_all()  # type: ignore[return-value]


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("needs")
    if marker is None:
        return
    probes = _probes()
    missing = [c for c in marker.args if not getattr(probes.get(c), "ok", False)]
    if missing:
        pytest.skip(f"kernel {os.uname().release} has no {', '.join(missing)} "
                    f"({'; '.join(str(getattr(probes.get(c), 'detail', '?')) for c in missing)})")
