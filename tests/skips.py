"""The one list of skips the suite may take under CI, each with why it is not a defect.

Under CI (CI or LABKIT_REQUIRE_ROOT set, as .ci/run does) every skip of either tier that
does not come from this list is a FAILURE (tests/conftest.py): a missing tool, package,
cached kernel, root, or a probe that says no are set-up or labkit defects, and a regression
must not turn CI green by skipping the test that would catch it. Outside CI such skips stay
skips, with their reason.

A test skips by design with `skip(ID, detail)` (or `reason(ID, detail)` in a skipif marker);
the reason then reads "by design (ID): detail", and the summary shows which rule allowed it.
"""

from __future__ import annotations

import re
from typing import NoReturn

import pytest

BY_DESIGN: dict[str, str] = {
    "opted-out": "the run was told to leave these tests out (LABKIT_NO_VM=1): an explicit, "
                 "printed choice of whoever runs the suite, never the suite's own",
    "opt-in": "a long or exhaustive variant that runs only when its variable asks for it "
              "(LABKIT_LARGE_LAN, LABKIT_REPRO_ALL, LABKIT_OFFLOAD_FULL, LABKIT_ALL_KERNELS): "
              "the default run covers the same claim more cheaply",
    "first-kernel-only": "a kernel-tier module (or test) whose claims do not depend on the kernel "
                         "version runs on the tier's first kernel only (CI's time budget)",
    "config-lacks": "the kernel under test has no such feature by its own config "
                    "(read from the kernel, not from labkit's probes)",
    "host-kernel": "the host's own kernel already is what the test needs the absence of (it "
                   "has TIPC or the handshake family, or is the 6.12 the Vagrant box wants), "
                   "so the case cannot arise on this host; the VM tier or another host shows it",
    "built-kernels": "needs kernels built from source by `labkit kernel build` (tens of "
                     "minutes each under emulation), which scripts/setup.sh does not build",
}
_PREFIX = re.compile(r"by design \(([a-z-]+)\): ")


def reason(rule: str, detail: str) -> str:
    """The skip reason for a by-design skip; an unknown rule is a bug in the test."""
    if rule not in BY_DESIGN:
        raise ValueError(f"{rule!r} is not a by-design skip in tests/skips.py "
                         f"(known: {', '.join(BY_DESIGN)}): add it there with its reason")
    return f"by design ({rule}): {detail}"


def skip(rule: str, detail: str) -> NoReturn:
    """Skip the running test by design (see BY_DESIGN)."""
    pytest.skip(reason(rule, detail))


def by_design(text: str) -> bool:
    """Whether a skip's reason comes from this list (only those may skip under CI)."""
    found = _PREFIX.match(text.removeprefix("Skipped: "))
    return found is not None and found.group(1) in BY_DESIGN
