"""The doctor on kernels it does not run: Debian's 7.x packages have no /boot (the config is
lib/modules/<release>/config, /usr merged), and what changed between releases (kTLS
KeyUpdate) is answered from the release, then printed as a difference between kernels.
The kernel tier (tests/kernel/test_ktls_kernels.py) checks the same answers live."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit import capabilities as doctor
from labkit.hosts.vm import kernels

OLD, NEW = "6.12.118+deb12-amd64", "7.2.13+deb14-amd64"


@pytest.fixture
def config_text() -> str:
    """A real Debian kernel config (the cached debian-6.12's): CONFIG_TLS=m, TIPC=m..."""
    k = kernels.cached("debian-6.12")
    found = k and doctor.config_file(Path(k.image).parent.parent, k.version)
    if not found:
        pytest.skip("debian-6.12 is not cached (scripts/setup.sh fetches it)")
    return found.read_text()


def test_each_debian_layout_yields_its_config(tmp_path: Path, config_text: str) -> None:
    old = tmp_path / "old"  # Debian 12's packages: boot/config-<release>
    (old / "boot").mkdir(parents=True)
    (old / "boot" / f"config-{OLD}").write_text(config_text)
    new = tmp_path / "new"  # Debian 14's: usr/lib/modules/<release>/config, no /boot
    (new / "usr/lib/modules" / NEW).mkdir(parents=True)
    (new / "usr/lib/modules" / NEW / "config").write_text(config_text)
    assert doctor.config_file(old, OLD) == old / "boot" / f"config-{OLD}"
    assert doctor.config_file(new, NEW) == new / "usr/lib/modules" / NEW / "config"
    assert doctor.config_file(tmp_path / "none", NEW) is None  # control: nothing there
    caps, source = doctor.kernel_capabilities(new, NEW)
    assert source == "from its config file" and caps["tipc"].ok and caps["ktls"].ok


def test_a_release_change_is_a_difference_between_kernels(config_text: str) -> None:
    old = doctor.from_config(config_text, OLD)
    new = doctor.from_config(config_text, NEW)  # same config, newer release
    assert old["ktls"].ok and new["ktls"].ok  # the config alone cannot tell them apart
    assert (old["ktls_rekey"].ok, new["ktls_rekey"].ok) == (False, True)
    assert not new["ktls_max_payload"].ok  # no release known: unknown until probed
    assert new["ktls_max_payload"].detail.startswith("unknown")
    lines = doctor.differences({"debian-7.2": new, "debian-6.12": old})
    assert lines == ["kTLS KeyUpdate (rekey): debian-7.2 yes, debian-6.12 no"]
    assert doctor.differences({"a": old, "b": old}) == []  # control: alike, no line


def test_a_report_from_an_older_labkit_gets_new_capabilities_from_the_config(
        tmp_path: Path, config_text: str) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{NEW}").write_text(config_text)
    old_report = {"ktls": doctor.Probe("ktls", True, "probed")}
    doctor.save_report(tmp_path, NEW, old_report)
    caps, source = doctor.kernel_capabilities(tmp_path, NEW)
    assert source == "probed in a VM"
    assert caps["ktls"].detail == "probed"  # the recorded answer wins
    assert caps["ktls_rekey"].ok  # a capability the report predates: from the release
