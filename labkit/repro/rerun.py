"""`labkit repro rerun BUNDLE`: run a bundle's scenario again on the very kernels it names
and say whether each verdict is the same.

A bundle travels (attached to a bug report), so the archive is opened as untrusted input:
only regular files and directories under one top directory, no `..`, no absolute names,
no links or devices, a bounded member count and size; anything else is refused before a
byte is written, and a refused or damaged archive leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from labkit.base import files
from labkit.errors import LabkitError, UsageError
from labkit.repro import bundle, kernelsource
from labkit.repro.model import COULD_NOT_RUN, HOST, KernelPlan, Scenario
from labkit.repro.runner import Report, Session

Say = Callable[[str], None]
MAX_MEMBERS = 20_000
MAX_BYTES = 1 << 30  # what an archive may unpack to
MAX_VERDICT = 16 << 20  # verdict.json / scenario.yaml read at most this much

SAME, DIFFERS, NOT_RUN = "yes", "NO", "could not run"


def _damaged(path: str, why: str) -> LabkitError:
    return LabkitError(f"{path} is not a usable labkit repro bundle: {why}.",
                       hint="Give the .tar.gz or the directory `labkit repro run` wrote, "
                            "as it was written; ask whoever sent it for a fresh copy.")


# -- opening -------------------------------------------------------------------------------


def safe_extract(archive: str, dest_parent: str) -> str:
    """Unpack archive into a new directory under dest_parent; its one top directory.

    Every member is checked before anything is written; on any problem nothing is left."""
    try:
        with files.open_regular(archive, files.BUNDLE) as raw, \
                tarfile.open(fileobj=raw, mode="r:gz") as tar:  # a FIFO or device: refused
            members = []
            total = 0
            while True:
                m = tar.next()
                if m is None:
                    break
                members.append(m)
                if len(members) > MAX_MEMBERS:
                    raise _damaged(archive, f"it holds more than {MAX_MEMBERS} members")
                _check_member(archive, m)
                total += m.size
                if total > MAX_BYTES:
                    raise _damaged(archive, f"it unpacks to more than {MAX_BYTES >> 20} MB")
            tops = {m.name.split("/", 1)[0] for m in members}
            if len(tops) != 1:
                raise _damaged(archive, "it does not hold exactly one top directory "
                                        f"(it holds {', '.join(sorted(tops)) or 'nothing'})")
            work = tempfile.mkdtemp(prefix=".rerun-", dir=dest_parent)
            try:
                for m in members:
                    _write_member(tar, m, work)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            return os.path.join(work, tops.pop())
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _damaged(archive, f"the archive is damaged or truncated ({exc})") from None


def _check_member(archive: str, m: tarfile.TarInfo) -> None:
    name = m.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name or "\0" in name:
        raise _damaged(archive, f"member {name!r} points outside the bundle (refused)")
    if not (m.isfile() or m.isdir()):
        kind = ("a symbolic link" if m.issym() else "a hard link" if m.islnk()
                else "a device" if (m.ischr() or m.isblk()) else "a FIFO" if m.isfifo()
                else "of an unknown type")
        raise _damaged(archive, f"member {name!r} is {kind} (refused: a bundle holds only "
                                "files and directories)")


def _write_member(tar: tarfile.TarFile, m: tarfile.TarInfo, work: str) -> None:
    dest = os.path.join(work, *[p for p in m.name.split("/") if p not in ("", ".")])
    if m.isdir():
        os.makedirs(dest, mode=0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    src = tar.extractfile(m)
    if src is None:
        raise tarfile.ReadError(f"cannot read member {m.name}")
    with src, open(dest, "xb") as out:
        left = m.size
        while left > 0:
            block = src.read(min(left, 1 << 20))
            if not block:
                raise EOFError(f"member {m.name} is cut short")
            out.write(block)
            left -= len(block)
    os.chmod(dest, 0o644)


def _read(path: str, what: str, root: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_VERDICT + 1)
    except FileNotFoundError:
        raise _damaged(root, f"it has no {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(root, f"its {what} cannot be read ({exc})") from None
    if len(text) > MAX_VERDICT:
        raise _damaged(root, f"its {what} is larger than {MAX_VERDICT >> 20} MB")
    return text


@dataclass
class Recorded:
    """What a bundle says happened: the scenario and, per kernel, its verdict."""

    root: str
    shown: str  # the path the user gave (root may be an unpacked copy)
    scenario_text: str
    topology_text: str
    verdict: dict[str, Any]
    kernels: list[dict[str, Any]] = field(default_factory=list)


def read(root: str, shown: str = "") -> Recorded:
    """A bundle directory's record; clear errors for an older labkit's or a damaged one
    (naming shown, the path the user gave, when root is an unpacked copy)."""
    return _read_record(root, shown or root)


def _read_record(root: str, shown: str) -> Recorded:
    try:
        verdict = json.loads(_read(os.path.join(root, "verdict.json"), "verdict.json", shown))
    except ValueError as exc:
        raise _damaged(shown, f"verdict.json is not JSON ({exc})") from None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("kernels"), list):
        raise _damaged(shown, "verdict.json has no list of kernels")
    fmt = verdict.get("format")
    if not isinstance(fmt, int) or fmt < bundle.FORMAT:
        raise LabkitError(
            f"{shown} was written by an older labkit (bundle format {fmt or 1}; this labkit "
            f"reruns format {bundle.FORMAT}): it does not record the exact kernel builds.",
            hint="Run its scenario.yaml with `labkit repro run` instead, naming the kernels "
                 "(see each kernel.json), or ask for a bundle from a current labkit.")
    if fmt > bundle.FORMAT:
        raise LabkitError(f"{shown} was written by a newer labkit (bundle format {fmt}).",
                          hint="Update labkit to rerun it.")
    kernels = []
    for i, k in enumerate(verdict["kernels"]):
        if not isinstance(k, dict) or not isinstance(k.get("kernel"), str):
            raise _damaged(shown, f"verdict.json's kernel {i + 1} has no name")
        kernels.append(k)
    if not kernels:
        raise _damaged(shown, "verdict.json names no kernel run")
    return Recorded(root, shown, _read(os.path.join(root, "scenario.yaml"), "scenario.yaml", shown),
                    _read(os.path.join(root, "topology.yaml"), "topology.yaml", shown),
                    verdict, kernels)


def scenario_of(rec: Recorded) -> Scenario:
    """The bundle's scenario, its topology inline (as recorded) and its kernels the ones
    recorded, loaded from the bundle so `{dir}` is the bundle's copy of its files."""
    from labkit.repro import loader

    try:
        doc = yaml.safe_load(rec.scenario_text)
        topo = yaml.safe_load(rec.topology_text)
    except yaml.YAMLError as exc:
        raise _damaged(rec.shown, f"its scenario.yaml or topology.yaml is not YAML ({exc})") \
            from None
    if not isinstance(doc, dict) or not isinstance(topo, dict):
        raise _damaged(rec.shown, "its scenario.yaml or topology.yaml is not a mapping")
    doc["topology"] = topo
    doc["kernels"] = [HOST]  # claims are the recorded verdicts; kernels come from records
    doc.pop("kernel_options", None)  # each run's recorded options carry them
    return loader.loads(yaml.safe_dump(doc, sort_keys=False),
                        os.path.join(rec.root, "scenario.yaml"))


# -- running -------------------------------------------------------------------------------


@dataclass
class Row:
    kernel: str
    build: str  # the exact package version or release recorded
    recorded: str
    now: str
    same: str  # SAME | DIFFERS | NOT_RUN
    detail: str = ""


def rerun(path: str, out_dir: str, *, say: Say = lambda text: None,
          include_keys: bool = False) -> tuple[list[Row], Report | None, int]:
    """Run the bundle at path (a directory or .tar.gz) again; rows, the new bundle, and the
    exit code: 0 every verdict the same, 1 one differs, 2 one could not run."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such bundle.",
                         hint="Give a bundle directory or .tar.gz that `labkit repro run` "
                              "wrote (under repro-bundles/ by default).")
    os.makedirs(out_dir, exist_ok=True)
    extracted = ""
    if os.path.isdir(path):
        root = path
    else:
        say(f"unpacking {path} (checked member by member)")
        root = safe_extract(path, out_dir)
        extracted = os.path.dirname(root)
    try:
        rec = read(root, path)
        scenario = scenario_of(rec)
        say(f"{scenario.name}: rerunning {len(rec.kernels)} kernel run(s) recorded in {path}")
        session = Session(scenario, out_dir, include_keys=include_keys, say=say)
        rows: list[Row] = []
        try:
            for k in rec.kernels:
                rows.append(_again(session, scenario, k, say, rec.root))
        finally:
            report = session.close({"rerun_of": os.path.abspath(path)})
    finally:
        if extracted:
            shutil.rmtree(extracted, ignore_errors=True)
    return rows, report, code_of(rows)


def _again(session: Session, scenario: Scenario, k: dict[str, Any], say: Say,
           session_root: str) -> Row:
    rerun_rec = k.get("rerun") if isinstance(k.get("rerun"), dict) else {"name": k["kernel"]}
    build = str(rerun_rec.get("package_version") or k.get("version") or "")
    row = Row(k["kernel"], build, str(k.get("result", "")), COULD_NOT_RUN, NOT_RUN)
    try:
        base = os.path.join(session_root, str(k.get("bundle") or k.get("label") or ""))
        name = k["kernel"] if k["kernel"] == HOST else kernelsource.from_record(
            rerun_rec, say, base)
    except LabkitError as exc:
        row.detail = exc.render()
        say(f"{k['kernel']}: {row.detail}")
        return row
    options = tuple(str(o) for o in k.get("options") or ())
    expect = k.get("expected") if k.get("expected") in ("reproduced", "not reproduced") \
        else None
    kr = session.kernel(KernelPlan(name=name, expect=expect, options=options))
    row.now = kr.result
    row.detail = kr.first_failure
    if row.now == COULD_NOT_RUN and row.recorded != COULD_NOT_RUN:
        row.same = NOT_RUN
    else:
        row.same = SAME if row.now == row.recorded else DIFFERS
    return row


def code_of(rows: list[Row]) -> int:
    if any(r.same == DIFFERS for r in rows):
        return 1
    if any(r.same == NOT_RUN for r in rows):
        return 2
    return 0
