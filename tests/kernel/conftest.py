"""The kernel tier runs inside a VM, once per kernel (scripts/test.sh): a test that needs a
capability this kernel lacks is skipped with the kernel and the capability named, so the
summary shows what ran where and nothing is skipped silently.

    @pytest.mark.needs("handshake")   # capability names as `labkit doctor` prints them

scripts/test.sh runs the tier on every kernel labkit fetches; the first (debian-6.12) runs
everything. Modules whose claims do not depend on the kernel version (the emulated offload
NIC: the same tls_device.c path on 6.1 and 6.12) run on the first kernel only, and say so
by name on the others (LABKIT_SECOND_KERNEL=1, set by scripts/test.sh); with
LABKIT_ALL_KERNELS=1 they run everywhere. CI's time budget is the reason.
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


FIRST_KERNEL_ONLY = ("test_offload.py", "test_offload_kmod.py")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (os.environ.get("LABKIT_SECOND_KERNEL") == "1" and
            os.environ.get("LABKIT_ALL_KERNELS") != "1" and
            item.path.name in FIRST_KERNEL_ONLY):
        pytest.skip(f"{item.path.name} runs on the first kernel of the tier only (its claims "
                    f"do not depend on the kernel version); LABKIT_ALL_KERNELS=1 runs it "
                    f"on kernel {os.uname().release} too")
    marker = item.get_closest_marker("needs")
    if marker is None:
        return
    probes = _probes()
    missing = [c for c in marker.args if not getattr(probes.get(c), "ok", False)]
    if missing:
        pytest.skip(f"kernel {os.uname().release} has no {', '.join(missing)} "
                    f"({'; '.join(str(getattr(probes.get(c), 'detail', '?')) for c in missing)})")
