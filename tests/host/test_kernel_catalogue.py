"""Kernel names, their order, and the catalogue of Debian builds labkit fetches from.

The grammar, ordering and near-name tests are pure. The catalogue tests use real apt on
labkit's own lists (network to the machine's mirror, root), a real point release
(6.12.43, ~106 MB) and a download killed mid-way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.base.wait import wait_until
from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import catalogue, kernelcache, kernels
from labkit.hosts.vm import kernelnames as kn
from tests.conftest import run_cli

# -- grammar (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "series", "version", "build"), [
    ("6.12.69", "version", "debian-6.12", "6.12.69", ""),
    ("debian-6.12.69", "version", "debian-6.12", "6.12.69", ""),
    ("debian-6.12", "series", "debian-6.12", "", ""),
    ("debian-6.1", "series", "debian-6.1", "", ""),
    ("debian-7.2", "series", "debian-7.2", "", ""),
    ("debian-7.3-rc", "series", "debian-7.3-rc", "", ""),
    ("7.3-rc7", "version", "debian-7.3-rc", "7.3-rc7", ""),
    ("6.12.90+deb12.1", "build", "debian-6.12", "6.12.90", "+deb12.1"),
    ("debian-6.12.117+deb13", "build", "debian-6.12", "6.12.117", "+deb13"),
    ("debian-6.1.0-56", "abi", "debian-6.1", "", "6.1.0-56"),
    ("built:mine", "built", "", "", ""),
    ("fedora-99", "other", "", "", ""),
    ("bzImage", "other", "", "", ""),
])
def test_names_parse(text: str, kind: str, series: str, version: str, build: str) -> None:
    spec = kn.parse(text)
    assert (spec.kind, spec.series, spec.version, spec.build) == (kind, series, version, build)


def test_version_order_for_bisection() -> None:
    want = ["6.1", "6.1.192", "6.12.43", "6.12.90+deb12", "6.12.90+deb12.1", "6.12.95",
            "6.12.118", "7.2.13", "7.3-rc6", "7.3-rc7", "7.3"]
    assert sorted(reversed(want), key=kn.version_key) == want
    assert kn.version_key("debian-6.12.9") < kn.version_key("debian-6.12.10")  # numeric


def test_debian_package_version_order() -> None:
    want = ["6.12.90~rc1-1", "6.12.90-1~bpo12+1", "6.12.90-1~deb12u1", "6.12.90-1",
            "6.12.90-2~bpo12+1", "6.12.100-1", "1:0.1-1"]
    assert sorted(reversed(want), key=kn.debian_version_key) == want
    assert kn.upstream_of("7.3~rc7-1~exp1") == "7.3-rc7"
    assert kn.upstream_of("6.12.90-2~bpo12+1") == "6.12.90"


def test_near_names() -> None:
    names = ["debian-6.12.43", "debian-6.12.57", "debian-6.12.69", "debian-6.12.73",
             "debian-7.2.13", "debian-6.1"]
    close = kn.near("6.12.70", names, count=2)
    assert close == ["debian-6.12.69", "debian-6.12.73"]
    assert kn.near("debian-6.21", ["debian-6.12", "debian-6.1", "debian-7.2"], count=1)
    hint = kn.unknown_hint("fedora-99", ["debian-6.12", "debian-7.2"])
    assert hint == "near ones: debian-6.12, debian-7.2"  # nothing similar: the series


def _b(version: str, abi: str, pv: str) -> tuple[str, str, str, object]:
    return (version, abi, pv, abi)


def test_match_series_prefers_debian12_then_newest() -> None:
    builds = [_b("6.12.117", "6.12.117+deb13", "6.12.117-1"),
              _b("6.12.118", "6.12.118+deb12", "6.12.118-1~deb12u1"),
              _b("6.12.90", "6.12.90+deb12", "6.12.90-1~bpo12+1"),
              _b("6.12.90", "6.12.90+deb12.1", "6.12.90-2~bpo12+1"),
              _b("6.1.192", "6.1.0-56", "6.1.192-2"), _b("6.1.192", "6.1.0-57", "6.1.192-3"),
              _b("7.2.13", "7.2.13+deb14", "7.2.13-1"), _b("7.3-rc7", "7.3", "7.3~rc7-1~exp1")]
    m = kernels._match
    assert m(kn.parse("debian-6.12"), builds) == "6.12.118+deb12"
    assert m(kn.parse("debian-6.12"), builds[:1]) == "6.12.117+deb13"  # only trixie's
    assert m(kn.parse("6.12.90"), builds) == "6.12.90+deb12.1"  # the newer rebuild
    assert m(kn.parse("6.12.90+deb12"), builds) == "6.12.90+deb12"
    assert m(kn.parse("6.1.192"), builds) == "6.1.0-57"
    assert m(kn.parse("debian-6.1.0-56"), builds) == "6.1.0-56"
    assert m(kn.parse("debian-6.1"), builds) == "6.1.0-57"
    assert m(kn.parse("debian-7.2"), builds) == "7.2.13+deb14"
    assert m(kn.parse("debian-7.3-rc"), builds) == "7.3"
    assert m(kn.parse("debian-7.3"), builds) is None  # no 7.3 release yet, only its rc
    assert m(kn.parse("6.12.44"), builds) is None


# -- reading the machine's apt sources (pure, on files) --------------------------------------


def test_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    m = catalogue.mirror(tmp_path)
    assert (m.main, m.security) == ("http://mirror.example/debian",
                                    "http://mirror.example/debian-security")
    text = catalogue.sources_text(m)
    assert "http://mirror.example/debian-security bookworm-security main" in text
    assert "http://mirror.example/debian experimental main" in text
    (d / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    m = catalogue.mirror(tmp_path)
    assert (m.main, m.security) == ("http://other.example/debian",
                                    "http://other.example/debian-security")
    (tmp_path / "sources.list").write_text("deb http://ppa.example/x focal main\n")
    with pytest.raises(Exception, match="No Debian entry"):
        catalogue.mirror(tmp_path)


# -- the real catalogue (apt on labkit's lists; root, network) -------------------------------


needs_root = pytest.mark.needs_root  # labkit's apt state needs root


@needs_root
def test_available_lists_the_range_and_the_cache() -> None:
    items = kernels.catalogue.available()
    by_name = {a.name: a for a in items}
    for v in (43, 57, 69, 73, 74, 85, 86, 88, 90, 94, 95):
        a = by_name[f"debian-6.12.{v}"]
        assert (a.series, a.suite) == ("debian-6.12", "bookworm-backports")
        assert a.size > 50e6
    assert "debian-6.12.90+deb12" in by_name  # the other build of 6.12.90
    assert by_name["debian-6.12.95"].headers and by_name["debian-6.12.118"].headers
    a72 = next(a for a in items if a.series == "debian-7.2")
    assert a72.suite == "sid" and len(a72.debs) > 1  # 7.x: image split into parts
    assert a72.headers
    assert any(a.series == "debian-7.3-rc" for a in items)
    assert [a.name for a in items] == [a.name for a in sorted(
        items, key=lambda a: catalogue.build_key(a.version, a.abi, a.package_version))]
    cached = {(k.package, k.package_version) for k in kernelcache.list_cached()}
    assert {(a.package, a.package_version) for a in items if a.cached} == cached & {
        (a.package, a.package_version) for a in items}
    # the system's apt configuration was neither used nor touched
    src = (catalogue.paths.apt_dir() / "sources.list").read_text()
    assert "experimental" in src and "/etc/apt" not in " ".join(catalogue.apt_options())


@needs_root
def test_between_gives_one_build_per_release_in_order() -> None:
    got = [a.name for a in kernels.between("6.12.85", "debian-6.12.95")]
    assert got == ["debian-6.12.85", "debian-6.12.86", "debian-6.12.88", "debian-6.12.90",
                   "debian-6.12.94", "debian-6.12.95"]
    with pytest.raises(UsageError, match=r"Unknown kernel 6\.12\.44; near ones: .*6\.12\.43"):
        kernels.between("6.12.44", "6.12.95")


@needs_root
def test_unknown_version_lists_near_ones() -> None:
    with pytest.raises(UsageError, match=r"Unknown kernel 6\.12\.70; near ones: .*"
                       r"debian-6\.12\.69.*debian-6\.12\.73"):
        kernels.fetch("6.12.70")
    res = run_cli("vm", "kernels", "fetch", "debian-6.99")
    assert res.returncode == 2, res.stderr
    assert "Unknown kernel debian-6.99; near ones:" in res.stderr
    assert "Traceback" not in res.stderr


@needs_root
def test_cli_available_json() -> None:
    res = run_cli("vm", "kernels", "list", "--available", "--json", timeout=300)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    names = {r["name"] for r in rows}
    assert {"debian-6.12.43", "debian-6.12.95", "debian-7.2.13"} <= names
    assert set(rows[0]) >= {"name", "version", "series", "suite", "package",
                            "package_version", "size", "cached"}


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kernel cache of the test's own (the shared downloads are reused when present)."""
    monkeypatch.setenv("LABKIT_KERNELS_DIR", str(tmp_path / "kernels"))
    return tmp_path / "kernels"


# Entries a test below fetched (name -> its directory, in that test's tmp_path): a later
# test that needs the same entry in a cache of its own copies it rather than unpacking
# ~100 MB and running depmod again (tens of seconds under load, and nothing more proved).
FETCHED: dict[str, Path] = {}


def fetched_into(name: str, cache: Path) -> kernelcache.Kernel:
    """`kernels.fetch(name)` into `cache` (LABKIT_KERNELS_DIR), or, when a test of this run
    fetched it already, its entry hard-linked in (kernel.json copied, its paths moved)."""
    src = FETCHED.get(name)
    if src is None or not (src / kernelcache.META).is_file():
        return kernels.fetch(name)
    dst = cache / src.name
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, symlinks=True, copy_function=os.link,
                    ignore=lambda d, names: [kernelcache.META] if Path(d) == src else [])
    meta = json.loads((src / kernelcache.META).read_text())
    moved = {k: v.replace(str(src), str(dst)) if isinstance(v, str) else v
             for k, v in meta.items()}
    (dst / kernelcache.META).write_text(json.dumps(moved))
    have = kernelcache.read(dst.name)
    assert have is not None and Path(have.image).is_file()
    return have


@needs_root
def test_point_release_cached_beside_the_series(private_cache: Path) -> None:
    k43 = kernels.fetch("6.12.43")
    k = kernels.fetch("debian-6.12")
    FETCHED["debian-6.12"] = Path(k.image).parent.parent
    assert k43.name == "debian-6.12.43" and k.name.startswith("debian-6.12.1")
    entries = sorted(p.name for p in private_cache.iterdir() if not p.name.startswith("."))
    assert entries == sorted([k43.name, k.name])
    for kern in (k43, k):
        assert Path(kern.image).is_file()
        assert kernels.bzimage_version(Path(kern.image)) == kern.version
        assert (Path(kern.modules_dir) / "modules.dep").stat().st_size > 0
    assert kernels.resolve("debian-6.12") == k  # the series: the newest cached
    assert kernels.resolve("debian-6.12.43") == kernels.resolve("6.12.43") == k43
    assert kernels.fetch("6.12.43") == k43  # cached: nothing fetched again


@needs_root
def test_an_entry_from_older_labkit_still_counts(private_cache: Path) -> None:
    """CI machines have debian-6.12/ with a kernel.json of today's format: the series and
    its exact release both resolve to it, and fetching the series reuses it."""
    new = fetched_into("debian-6.12", private_cache)
    legacy = private_cache / "debian-6.12"
    os.rename(Path(new.image).parent.parent, legacy)
    meta = json.loads((legacy / "kernel.json").read_text())
    meta.update(name="debian-6.12", image=str(legacy / "boot" / Path(new.image).name))
    (legacy / "kernel.json").write_text(json.dumps(meta))
    assert kernels.resolve("debian-6.12").name == "debian-6.12"
    assert kernels.resolve(new.name).name == "debian-6.12"
    assert kernels.fetch("debian-6.12").name == "debian-6.12"
    assert sorted(p.name for p in private_cache.iterdir() if not p.name.startswith(".")) \
        == ["debian-6.12"]


@needs_root
def test_cut_download_leaves_nothing_and_the_next_fetch_completes(
        tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "dl"))  # no .deb to reuse
    downloads = tmp_path / "dl" / "downloads"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from labkit.hosts.vm import kernels; kernels.fetch('6.12.57')"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def partial() -> int:
            return sum(f.stat().st_size for f in downloads.glob(".dl-*/**/*") if f.is_file())

        wait_until(lambda: partial() > 1_000_000, 300, "the download to be under way",
                   detail=lambda: f"{partial()} bytes so far")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not list(private_cache.glob("*/kernel.json"))
    assert not list(downloads.glob("*.deb"))
    assert kernels.cached("6.12.57") is None
    k = kernels.fetch("6.12.57")  # restarts, and cleans what the killed one left
    assert k.name == "debian-6.12.57" and Path(k.image).is_file()
    assert not list(downloads.glob(".dl-*"))
    assert [p.name for p in private_cache.iterdir() if not p.name.startswith(".")] \
        == ["debian-6.12.57"]


@needs_root
def test_disk_space_is_checked_before_downloading(
        private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not enough room: a clear error naming the size, and nothing downloaded or cached."""
    real = kernels.shutil.disk_usage
    monkeypatch.setattr(kernels.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=50_000_000))
    with pytest.raises(LabkitError, match=r"Not enough disk space for debian-6\.12\.69: "
                       r"it needs about \d+ MB .* and 50 MB are free"):
        kernels.fetch("6.12.69")
    assert not list(private_cache.glob("*/kernel.json"))
    monkeypatch.setattr(kernels.shutil, "disk_usage", real)  # control: room enough
    assert kernels.lookup("6.12.69").size * 4 < real(private_cache.parent).free


def test_loaders_accept_names_by_form_when_there_is_no_catalogue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_KERNELS_DIR", str(tmp_path / "kernels"))
    monkeypatch.setenv("LABKIT_APT_DIR", str(tmp_path / "apt"))
    assert [kernels.accepts(n) for n in ("debian-7.2", "6.12.43", "built:mine")] == [True] * 3
    assert [kernels.accepts(n) for n in ("debian-9.9", "fedora-99", "bzImage")] == [False] * 3
    assert not (tmp_path / "apt").exists()  # no network, no writes


@needs_root
def test_loaders_check_names_against_the_catalogue() -> None:
    kernels.catalogue.available()  # lists present
    assert kernels.accepts("6.12.43") and kernels.accepts("debian-6.12.90+deb12")
    assert not kernels.accepts("6.12.44") and not kernels.accepts("debian-6.13")
