"""Bisection logic on a fake runner: ordering, halving, the boot budget, same-verdict ends,
flaky builds and builds that could not run; and `--bisect-exit`'s codes through the CLI."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.repro import bisect
from labkit.repro.model import COULD_NOT_RUN, NOT_REPRODUCED, REPRODUCED
from tests import skips

POINTS = [43, 57, 69, 73, 74, 85, 86, 88, 90, 94, 95, 107, 117, 118]
BUILDS = [f"debian-6.12.{n}" for n in POINTS]


def fake(change_at: int, flaky: set[str] = frozenset(), broken: set[str] = frozenset()):
    """A scenario reproduced on builds before index change_at and fixed from it on."""
    calls: list[str] = []

    def test(kernel: str) -> list[str]:
        calls.append(kernel)
        if kernel in broken:
            return [COULD_NOT_RUN]
        if kernel in flaky:
            return [REPRODUCED, NOT_REPRODUCED]
        return [REPRODUCED if BUILDS.index(kernel) < change_at else NOT_REPRODUCED]

    return test, calls


@pytest.mark.parametrize("change_at", range(1, len(BUILDS)))
def test_every_change_point_is_found_within_the_budget(change_at: int) -> None:
    test, calls = fake(change_at)
    res = bisect.bisect(BUILDS, test)
    assert res.status == bisect.FOUND
    assert (res.last_before, res.first_after) == (BUILDS[change_at - 1], BUILDS[change_at])
    assert (res.before, res.after) == (REPRODUCED, NOT_REPRODUCED)
    assert calls[:2] == [BUILDS[0], BUILDS[-1]]  # both ends first
    assert len(calls) == len(set(calls)) == res.boots  # one boot per build, none twice
    assert res.boots <= math.ceil(math.log2(len(BUILDS))) + 2
    assert res.boots <= bisect.boot_budget(len(BUILDS))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 12, 33])
def test_budget_holds_for_any_length(n: int) -> None:
    builds = [f"k{i}" for i in range(n)]
    worst = 0
    for change in range(1, n):
        res = bisect.bisect(builds, lambda k, c=change: [
            REPRODUCED if builds.index(k) < c else NOT_REPRODUCED])
        assert res.found and builds.index(res.first_after) == change
        worst = max(worst, res.boots)
    assert worst == bisect.boot_budget(n)  # the budget is reached, never passed
    assert worst <= math.ceil(math.log2(n)) + 2


def test_the_fixed_to_broken_direction_is_found_too() -> None:
    res = bisect.bisect(BUILDS, lambda k: [
        NOT_REPRODUCED if BUILDS.index(k) < 9 else REPRODUCED])
    assert res.found and res.first_after == BUILDS[9]
    assert (res.before, res.after) == (NOT_REPRODUCED, REPRODUCED)


def test_same_verdict_at_both_ends_stops_after_two_boots() -> None:
    test, calls = fake(len(BUILDS))  # reproduced everywhere
    res = bisect.bisect(BUILDS, test)
    assert res.status == bisect.SAME_ENDS and not res.found
    assert calls == [BUILDS[0], BUILDS[-1]]
    assert "both ends are reproduced" in res.sentence()
    from labkit.repro import bisect_run

    assert bisect_run.exit_code(res) == 2


def test_a_flaky_build_is_named_and_never_picked() -> None:
    mid = BUILDS[(len(BUILDS) - 1) // 2]
    test, calls = fake(3, flaky={mid})
    res = bisect.bisect(BUILDS, test)
    assert res.status == bisect.FLAKY_STOP and res.flaky == mid
    assert not res.found and res.first_after != mid and res.last_before != mid
    assert mid in res.sentence() and "flaky" in res.sentence()
    assert res.probe(mid).verdict == bisect.FLAKY
    from labkit.repro import bisect_run

    assert bisect_run.exit_code(res) == 1
    # control: the same history without the flaky build names a pair
    assert bisect.bisect(BUILDS, fake(3)[0]).found


def test_a_flaky_end_stops_at_once() -> None:
    test, calls = fake(3, flaky={BUILDS[0]})
    res = bisect.bisect(BUILDS, test)
    assert res.status == bisect.FLAKY_STOP and res.flaky == BUILDS[0] and calls == BUILDS[:1]


def test_a_build_that_cannot_run_is_skipped_for_its_neighbour() -> None:
    mid = (len(BUILDS) - 1) // 2
    test, calls = fake(3, broken={BUILDS[mid]})
    res = bisect.bisect(BUILDS, test)
    assert res.found and res.first_after == BUILDS[3]
    assert BUILDS[mid] in calls and BUILDS[mid] not in (res.last_before, res.first_after)


def test_only_skipped_builds_between_gives_a_range() -> None:
    test, _ = fake(3, broken={BUILDS[2]})
    res = bisect.bisect(BUILDS, test)
    assert res.status == bisect.SKIPPED_RANGE
    assert (res.last_before, res.first_after, res.skipped) == (BUILDS[1], BUILDS[3],
                                                               [BUILDS[2]])


def test_an_end_that_cannot_run_stops() -> None:
    test, calls = fake(3, broken={BUILDS[-1]})
    res = bisect.bisect(BUILDS, test)
    assert res.status == bisect.END_UNUSABLE and len(calls) == 2


def test_retries_agreeing_keep_the_verdict() -> None:
    p = bisect.Probe("k", [REPRODUCED, COULD_NOT_RUN, REPRODUCED])
    assert p.verdict == REPRODUCED and p.boots == 3
    assert bisect.Probe("k", [COULD_NOT_RUN]).verdict == COULD_NOT_RUN


def test_progress_says_which_kernel_and_its_verdict() -> None:
    lines: list[str] = []
    bisect.bisect(BUILDS[:4], fake(2)[0], say=lines.append)
    assert lines[0] == f"[1/4] {BUILDS[0]}: testing (first end)"
    assert any(line.startswith(f"[4/4] {BUILDS[3]}: not reproduced") for line in lines)


# -- --bisect-exit through the real CLI ---------------------------------------------------

LABKIT = [sys.executable, "-m", "labkit.cli.main"]
needs_root = pytest.mark.needs_root


def _write(tmp_path, body: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(f"""scenario: bisect-exit
title: a marker file decides
source: {{report: test}}
topology:
  nodes: {{a: {{}}}}
kernels: [host]
steps:
  - up
{body}""")
    return str(path)


def _cli(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABKIT, "repro", "run", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@needs_root
@pytest.mark.parametrize(("marker", "code"), [("yes", 1), ("no", 0)])
def test_bisect_exit_reproduced_1_not_reproduced_0(tmp_path, marker: str, code: int) -> None:
    (tmp_path / "marker").write_text(marker)
    f = _write(tmp_path, f"""  - exec:
      node: a
      cmd: "grep -qx yes {tmp_path}/marker"
      expect: {{status: 0}}
      when: reproduced
""")
    done = _cli(f, "--bisect-exit", "-o", str(tmp_path / "b"), cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert f"-> exit {code}" in done.stderr


@needs_root
def test_bisect_exit_125_when_the_run_cannot_judge(tmp_path) -> None:
    f = _write(tmp_path, """  - exec: {node: a, cmd: "exit 3"}
  - exec: {node: a, cmd: "true", when: reproduced, expect: {status: 0}}
""")
    done = _cli(f, "--bisect-exit", "-o", str(tmp_path / "b"), cwd=tmp_path)
    assert done.returncode == 125, done.stderr
    assert "could not run -> exit 125" in done.stderr


def test_bisect_exit_128_on_a_broken_scenario_stops_git_bisect(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario: x\n")
    done = _cli(str(bad), "--bisect-exit", cwd=tmp_path)
    assert done.returncode == 128, done.stderr
    assert "bad.yaml" in done.stderr
    # control: without --bisect-exit the same file is the usual usage error
    assert _cli(str(bad), cwd=tmp_path).returncode == 2


def test_bisect_exit_wants_one_kernel(tmp_path) -> None:
    f = _write(tmp_path, "")
    done = _cli(f, "--bisect-exit", "-k", "host", "-k", "debian-6.12", cwd=tmp_path)
    assert done.returncode == 128 and "judges one kernel" in done.stderr


@pytest.fixture
def session_vm() -> Iterator[None]:
    """Not the session's shared VM: the vm tests here boot VMs of their own, one at a time."""
    yield None


# -- git bisect run on a synthetic history (two built kernels differing in one patch) -----

SHIPPED, PATCHED = "built:src-7.2", "built:no-rekey"
REKEY = Path(__file__).resolve().parents[2] / "repro" / "ktls-tls13-rekey.yaml"


def _commit_kernel(repo: Path, k, message: str) -> None:
    """The repository's content becomes an unpacked kernel root (boot/vmlinuz-REL and its
    lib/modules/REL), what `--kernel .` boots, as a commit."""
    for old in ("boot", "lib"):
        shutil.rmtree(repo / old, ignore_errors=True)
    (repo / "boot").mkdir()
    shutil.copyfile(k.image, repo / "boot" / os.path.basename(k.image))
    if k.modules_dir:
        shutil.copytree(k.modules_dir, repo / "lib" / "modules" / k.version)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env={**os.environ, "GIT_AUTHOR_NAME": "t",
                                           "GIT_AUTHOR_EMAIL": "t@example.org",
                                           "GIT_COMMITTER_NAME": "t",
                                           "GIT_COMMITTER_EMAIL": "t@example.org"}).stdout


@pytest.mark.vm
@pytest.mark.needs_root
def test_git_bisect_run_names_the_commit_that_applied_the_patch(tmp_path: Path) -> None:
    """History: shipped 7.2, a README change, the patch that puts back the EBUSY (bad from
    here), another README change. `git bisect run ... --bisect-exit` must name the third
    commit; it boots the kernel at each commit it tests (two here)."""
    from labkit.hosts.vm import kernels

    if os.environ.get("LABKIT_NO_VM") == "1":
        skips.skip("opted-out", "LABKIT_NO_VM=1: this test boots VMs")
    built = {n: kernels.cached(n) for n in (SHIPPED, PATCHED)}
    missing = [n for n, k in built.items() if k is None]
    if missing:
        skips.skip("built-kernels", f"{', '.join(missing)} not built: `labkit kernel build "
                   "--source 7.2 --name src-7.2` and the same with `--patch "
                   "repro/patches/ktls-refuse-rekey.patch --name no-rekey`")
    repo = tmp_path / "linux"
    repo.mkdir()
    git(repo, "init", "-q")
    _commit_kernel(repo, built[SHIPPED], "shipped 7.2")
    (repo / "README").write_text("one\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "readme")
    _commit_kernel(repo, built[PATCHED], "tls: refuse a second key (the bug)")
    bad = git(repo, "rev-parse", "HEAD").strip()
    (repo / "README").write_text("two\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "readme again")
    git(repo, "bisect", "start", "HEAD", "HEAD~3")
    done = subprocess.run(
        ["git", "-C", str(repo), "bisect", "run", *LABKIT, "repro", "run", str(REKEY),
         "--kernel", ".", "--bisect-exit", "-o", str(tmp_path / "bundles")],
        capture_output=True, text=True, timeout=1800, cwd=repo)
    assert f"{bad} is the first bad commit" in done.stdout, done.stdout + done.stderr
    runs = sorted((tmp_path / "bundles").glob("*/verdict.json"))
    assert 1 <= len(runs) <= 2  # git tested one or two commits, one boot each
