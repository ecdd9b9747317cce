"""`labkit repro rerun`: a real bundle run again (same verdict: 0; the behaviour changed: 1),
and damaged, old or malicious bundles refused with a clear error and nothing left behind.

The host-kernel tests make their bundle with a real `repro run` on this machine's kernel
(no VM); one `vm` test makes it on debian-6.12 and reruns it there (the exact package
version recorded and fetched again).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.repro import rerun
from tests import skips
from tests.conftest import require_root, run_cli

SCENARIO = """scenario: rerun-marker
title: a marker file decides whether it reproduces
source: {{report: test}}
topology:
  nodes: {{a: {{}}}}
kernels:
  {kernel}: {{expect: reproduced}}
steps:
  - up
  - exec:
      name: marker
      node: a
      cmd: "grep -qx yes {marker}"
      when: reproduced
  - exec: {{node: a, cmd: [python3, "{{dir}}/scripts/hello.py"], expect: {{stdout: hello}},
            timeout: 300}}
"""


def make_scenario(tmp_path: Path, kernel: str = "host") -> Path:
    """A scenario that reads a script beside it, so the bundle must carry it."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "hello.py").write_text("print('hello')\n")
    marker = tmp_path / "marker"
    marker.write_text("yes\n")
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(kernel=kernel, marker=marker))
    return path


def bundle_of(done: subprocess.CompletedProcess[str]) -> Path:
    found = re.search(r"^bundle: (\S+)", done.stdout, re.M)
    assert found, f"no bundle line:\n{done.stdout}\n{done.stderr}"
    return Path(found.group(1))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One real `repro run` on this machine's kernel: (scenario dir, bundle dir)."""
    require_root()  # repro run builds a lab
    base = tmp_path_factory.mktemp("made")
    path = make_scenario(base)
    done = run_cli("repro", "run", str(path), "-o", str(base / "out"), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return base, bundle_of(done)


@pytest.mark.needs_root
def test_rerun_of_the_archive_gives_the_same_verdict(made, tmp_path: Path) -> None:
    base, original = made
    archive = Path(str(original) + ".tar.gz")
    shutil.rmtree(base / "scripts")  # the bundle carries what the scenario reads
    try:
        done = run_cli("repro", "rerun", str(archive), "-o", str(tmp_path / "out"),
                       timeout=300)
    finally:
        (base / "scripts").mkdir()
        (base / "scripts" / "hello.py").write_text("print('hello')\n")
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("host"))
    assert row.split()[1:4] == [os.uname().release, "reproduced", "reproduced"]
    assert " yes " in row
    again = bundle_of(done)
    verdict = json.loads((again / "verdict.json").read_text())
    assert verdict["rerun_of"] == str(archive) and verdict["kernels"][0]["result"] == \
        "reproduced"
    assert (again / "scripts" / "hello.py").is_file()
    # the unpacked copy is gone: only the new bundle (and its archive) is in --out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [again.name, again.name + ".tar.gz"])


@pytest.mark.needs_root
def test_rerun_says_when_the_behaviour_changed(made, tmp_path: Path) -> None:
    base, original = made
    (base / "marker").write_text("no\n")
    try:
        done = run_cli("repro", "rerun", str(original), "-o", str(tmp_path / "out"),
                       "--json", timeout=300)
    finally:
        (base / "marker").write_text("yes\n")
    assert done.returncode == 1, done.stdout + done.stderr
    (row,) = json.loads(done.stdout)["rows"]
    assert (row["recorded"], row["now"], row["same"]) == ("reproduced", "not reproduced",
                                                           rerun.DIFFERS)


# -- bundles that must be refused ---------------------------------------------------------


def tar_with(tmp_path: Path, add) -> Path:
    out = tmp_path / "evil.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        add(tar)
    return out


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def refused(tmp_path: Path, archive: Path, words: str) -> None:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(LabkitError) as caught:
        rerun.rerun(str(archive), str(out))
    text = caught.value.render()
    assert str(archive) in text and words in text, text
    assert caught.value.hint
    assert list(out.iterdir()) == []  # nothing half-unpacked left behind
    assert not (tmp_path / "escaped").exists()


def test_dotdot_member_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, tar_with(tmp_path, lambda t: (_file(t, "b/verdict.json"),
                                                    _file(t, "b/../../escaped"))),
            "points outside the bundle")


def test_absolute_member_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, tar_with(tmp_path, lambda t: _file(t, str(tmp_path / "escaped"))),
            "points outside the bundle")


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        _file(tar, "b/verdict.json")
        link = tarfile.TarInfo("b/scripts")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)

    refused(tmp_path, tar_with(tmp_path, add), "is a symbolic link")


def test_device_member_is_refused(tmp_path: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        dev = tarfile.TarInfo("b/null")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(dev)

    refused(tmp_path, tar_with(tmp_path, add), "is a device")


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    good = tar_with(tmp_path, lambda t: _file(t, "b/verdict.json", os.urandom(200_000)))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:50_000])
    refused(tmp_path, cut, "damaged or truncated")


def test_missing_verdict_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, tar_with(tmp_path, lambda t: _file(t, "b/scenario.yaml")),
            "it has no verdict.json")


def test_bundle_from_an_older_labkit(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "verdict.json").write_text(json.dumps(
        {"scenario": "x", "kernels": [{"kernel": "debian-6.12", "result": "reproduced"}]}))
    with pytest.raises(LabkitError) as caught:
        rerun.rerun(str(old), str(tmp_path / "out"))
    assert "older labkit" in caught.value.render() and str(old) in caught.value.render()


def test_a_good_archive_unpacks(tmp_path: Path) -> None:
    """Control for the refusals: the same writer with plain members is accepted."""
    archive = tar_with(tmp_path, lambda t: (_file(t, "b/verdict.json", b"{}"),
                                            _file(t, "b/k/steps/01.out", b"hi")))
    root = rerun.safe_extract(str(archive), str(tmp_path))
    assert Path(root, "k", "steps", "01.out").read_bytes() == b"hi"


def test_cli_error_is_one_paragraph_exit_2_not_a_traceback(tmp_path: Path) -> None:
    bad = tar_with(tmp_path, lambda t: _file(t, "b/../escaped"))
    done = run_cli("repro", "rerun", str(bad), "-o", str(tmp_path / "out"))
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr
    assert "points outside the bundle" in done.stderr


@pytest.fixture
def session_vm() -> Iterator[None]:
    """Not the session's shared VM: the vm tests here boot VMs of their own, one at a time."""
    yield None


# -- the VM case: the exact Debian package recorded, fetched and booted again -------------


@pytest.mark.vm
@pytest.mark.needs_root
def test_rerun_on_the_recorded_debian_kernel(tmp_path: Path) -> None:
    from labkit.hosts.vm import kernels

    if os.environ.get("LABKIT_NO_VM") == "1":
        skips.skip("opted-out", "LABKIT_NO_VM=1: this test boots VMs")
    k = kernels.cached("debian-6.12")
    if k is None:
        pytest.skip("debian-6.12 is not cached (scripts/setup.sh fetches it)")
    path = make_scenario(tmp_path, "debian-6.12")
    done = run_cli("repro", "run", str(path), "-o", str(tmp_path / "a"), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    original = bundle_of(done)
    info = json.loads((original / "debian-6.12" / "kernel.json").read_text())
    assert info["rerun"]["package_version"] == k.package_version
    done = run_cli("repro", "rerun", str(original) + ".tar.gz", "-o", str(tmp_path / "b"),
                   timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("debian-6.12"))
    assert k.package_version in row and row.split()[2:4] == ["reproduced", "reproduced"]
