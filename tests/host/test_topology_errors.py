"""Every malformed topology gets one clear, located error, exit code 2, and no lab.

Each file in tests/fixtures/bad marks the offending line with `# <-- here` and states the
expected message in an `# expect:` header (and optionally `# hint:`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import TopologyError
from labkit.topology import loader, located
from tests.conftest import ROOT, lab_namespaces, run_cli

# From the repository root, not the working directory: run from elsewhere, a relative glob
# would collect nothing and every parametrized test would silently vanish.
BAD = sorted((ROOT / "tests" / "fixtures" / "bad").glob("*.yaml"))
SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))


def expectation(path: Path) -> tuple[int, str, str]:
    lines = path.read_text().splitlines()
    line = next(i + 1 for i, text in enumerate(lines) if "# <-- here" in text)
    msg = next(t.split(":", 1)[1].split("# <--")[0].strip()
               for t in lines if t.startswith("# expect:"))
    hint = next((t.split(":", 1)[1].strip() for t in lines if t.startswith("# hint:")), "")
    return line, msg, hint


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 40
    assert len(SHIPPED) >= 4, "the shipped topologies were not found"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_error_is_located(path: Path) -> None:
    line, msg, hint = expectation(path)
    with pytest.raises(TopologyError) as info:
        loader.load(str(path))
    problems = info.value.problems
    at_line = [p for p in problems if p.loc and p.loc.line == line]
    assert at_line, f"no problem reported at line {line}: {[p.render() for p in problems]}"
    assert any(msg in p.render() for p in at_line), [p.render() for p in at_line]
    if hint:
        assert any(hint in p.render() for p in at_line), [p.render() for p in at_line]
    for p in problems:
        assert p.loc is not None and p.loc.file == str(path)


@pytest.mark.needs_root  # `up` refuses non-root users before it reads the file
@pytest.mark.parametrize("path", BAD[::5], ids=[p.stem for p in BAD[::5]])
def test_cli_up_refuses_without_traceback_or_leftovers(path: Path) -> None:
    line, msg, _ = expectation(path)
    result = run_cli("up", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert f"{path}:{line}:" in result.stderr.replace("\n", "")
    assert not [n for n in lab_namespaces() if n.startswith("lk-t.")]  # lab `t` never made


def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "many.yaml"
    bad.write_text("name: t\nnodes:\n  a: {colour: red}\n  b: {}\nlinks:\n"
                   "  - endpoints: [a:eth1, zz:eth1]\n"
                   "  - endpoints: [a:eth2, b:averylongname123]\n")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    out = result.stderr.replace("\n", "")
    for where in (f"{bad}:3:7", f"{bad}:6:", f"{bad}:7:"):
        assert where in out, out


def test_missing_file_is_a_clear_error() -> None:
    result = run_cli("validate", "topologies/does-not-exist.yaml")
    assert result.returncode == 2
    assert "no such topology file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_topologies_validate(path: Path) -> None:
    result = run_cli("validate", str(path), "--json")
    assert result.returncode == 0, result.stderr


def billion_laughs(levels: int, width: int = 10) -> str:
    """A topology whose YAML aliases expand to width**levels values."""
    lines = ["name: t", "nodes: {a: {}}", 'lol0: &lol0 "lol"']
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]"
              for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    """10**9 values behind 9 lines of aliases: refused while reading, located, exit 2.

    (Before: `validate` walked them all and hung; the subprocess timeout turns a hang
    into a failure rather than a stuck test run.)
    """
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs(9))
    result = run_cli("validate", str(bomb), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    err = result.stderr.replace("\n", " ")
    assert f"{bomb}:" in err and "billion laughs" in err
    assert f"{located.MAX_ALIASED_VALUES:,}" in err


def test_aliases_within_the_budget_are_read() -> None:
    """The positive control: aliases are allowed, up to the budget, and expand as YAML says."""
    text = ("name: t\nnodes:\n  a: &plain {sysctls: {net.ipv4.ip_forward: 1}}\n"
            "  b: *plain\n")
    topo = loader.loads(text)
    assert topo.nodes["b"].sysctls == {"net.ipv4.ip_forward": "1"}
    levels = 4  # 10**4 values: under MAX_ALIASED_VALUES, so read (the block is unknown
    with pytest.raises(TopologyError) as info:  # to the loader, which says so)
        loader.loads(billion_laughs(levels))
    assert all("aliases" not in p.message for p in info.value.problems)
    assert any("unknown key 'lol4'" in p.message for p in info.value.problems)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_topology_declares_checks_of_its_features(path: Path) -> None:
    """`labkit run FILE` proves something: each shipped topology declares checks, and one
    of each feature it uses that has check kinds (kproxy.yaml once declared none)."""
    from labkit import features

    topo = loader.load(str(path))
    assert topo.checks, f"{path.name} declares no checks"
    owners = {features.owner_of_check(c.kind) for c in topo.checks}
    for key in topo.features:
        if features.get(key).check_kinds:
            assert key in owners, f"{path.name} uses {key} but declares none of its checks"
