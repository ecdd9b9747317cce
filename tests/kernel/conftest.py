"""The kernel tier runs inside a VM, once per kernel (scripts/test.sh): a test that needs a
capability this kernel lacks is skipped with the kernel and the capability named, so the
summary shows what ran where and nothing is skipped silently.

    @pytest.mark.needs("handshake")   # capability names as `labkit doctor` prints them

Whether this kernel HAS a capability is read from the kernel's own config (/proc/config.gz,
/boot/config-*, /lib/modules/<release>/config or the cached kernel's config file: the
symbols each capability names in labkit's doctor), not from labkit's probes: a probe runs
labkit's own code, so a labkit bug would otherwise read as "this kernel lacks it" and skip
the very tests that should catch it. The probes stay as diagnostics: a test whose kernel
has the feature but whose probe fails is skipped naming both, and under CI (CI or
LABKIT_REQUIRE_ROOT set, as .ci/run does) it FAILS instead. Under CI every other skip of
the tier fails too, unless it is one of the skips by design of tests/skips.py (the rule is
tests/conftest.py's, for both tiers).

scripts/test.sh runs the tier on every kernel labkit fetches; the first (debian-6.12) runs
everything. Modules whose claims do not depend on the kernel version run on the first
kernel only, and say so by name on the others (LABKIT_SECOND_KERNEL=1, set by
scripts/test.sh); with LABKIT_ALL_KERNELS=1 they run everywhere. CI's time budget is the
reason.
"""

from __future__ import annotations

import os
from functools import cache

import pytest

from tests import skips

# Modules that run on the tier's first kernel only (their claims are the same on each),
# -> the first release from which they run on every kernel anyway: the offload NIC's module
# takes another path from 6.14 on (rtnl_newlink_params), so 7.2 tests its own build.
FIRST_KERNEL_ONLY: dict[str, tuple[int, int] | None] = {
    "test_offload.py": None, "test_offload_kmod.py": (6, 14)}
RELEASE = os.uname().release


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*caps): kernel capabilities the test needs")
    config.addinivalue_line("markers", "first_kernel_only(why): like FIRST_KERNEL_ONLY, for "
                            "one test: why its claim does not depend on the kernel")


@cache
def _probes() -> dict[str, object]:
    from labkit.capabilities import probe_all

    return probe_all()  # type: ignore[return-value]


@pytest.fixture(scope="session")
def doctor_probes() -> dict[str, object]:
    """labkit's doctor probes of this kernel, run once per session (seconds under TCG)."""
    return _probes()


@cache
def kernel_config() -> tuple[dict[str, object], str] | None:
    """(capability -> Probe read from the config, where the config was found), or None."""
    from labkit.capabilities import from_config, running_config

    found = running_config()
    if found is None:
        return None
    text, where = found
    return from_config(text, RELEASE), where  # type: ignore[return-value]


def config_has(*caps: str) -> bool:
    """Whether this kernel's own config says it has every capability (False if unknown)."""
    known = kernel_config()
    return known is not None and all(getattr(known[0].get(c), "ok", False) for c in caps)


def _runs_anyway(module: str) -> bool:
    from labkit.capabilities import release_tuple

    since, have = FIRST_KERNEL_ONLY[module], release_tuple(RELEASE)
    return since is not None and have is not None and have >= since


def _detail(probes: dict[str, object], caps: list[str]) -> str:
    return "; ".join(f"{c}: {getattr(probes.get(c), 'detail', 'no such capability')}"
                     for c in caps)


def first_kernel() -> bool:
    """Whether this is the tier's first kernel, or LABKIT_ALL_KERNELS=1 asks for all.

    Where a test reaches a kernel claim through a CLI verb, the verb runs as a user types
    it on the first kernel only; later kernels check the same claim through the API the
    verb renders. How the CLI renders a verdict does not depend on the kernel, and a CLI
    start costs 7-9 s of emulated CPU in a TCG guest (typer, rich, the verb's modules)."""
    return (os.environ.get("LABKIT_SECOND_KERNEL") != "1" or
            os.environ.get("LABKIT_ALL_KERNELS") == "1")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (not first_kernel() and item.path.name in FIRST_KERNEL_ONLY and
            not _runs_anyway(item.path.name)):
        skips.skip("first-kernel-only", f"{item.path.name} runs on the first kernel of the "
                   f"tier only (its claims do not depend on the kernel version); "
                   f"LABKIT_ALL_KERNELS=1 runs it on kernel {RELEASE} too")
    only = item.get_closest_marker("first_kernel_only")
    if only is not None and not first_kernel():
        skips.skip("first-kernel-only", f"{item.name} runs on the first kernel of the tier "
                   f"only ({only.args[0]}); LABKIT_ALL_KERNELS=1 runs it on kernel "
                   f"{RELEASE} too")
    marker = item.get_closest_marker("needs")
    if marker is None:
        return
    caps = list(marker.args)
    known = kernel_config()
    if known is None:
        pytest.skip(f"no config file found for kernel {RELEASE} (/proc/config.gz, "
                    f"/boot/config-{RELEASE}, /lib/modules/{RELEASE}/config), so the tier "
                    f"cannot tell whether it has {', '.join(caps)}")
    config, where = known
    lacking = [c for c in caps if not getattr(config.get(c), "ok", False)]
    if lacking:
        skips.skip("config-lacks", f"this kernel's config lacks {', '.join(lacking)} (kernel "
                   f"{RELEASE}, {where}: {_detail(config, lacking)})")
    probes = _probes()
    broken = [c for c in caps if not getattr(probes.get(c), "ok", False)]
    if broken:
        pytest.skip(f"kernel {RELEASE} has {', '.join(broken)} by its config ({where}), yet "
                    f"labkit's probe says no ({_detail(probes, broken)}): a labkit bug or a "
                    f"module that will not load")
