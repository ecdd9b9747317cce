"""Kernel sources for `labkit kernel build`: Debian's linux-source-X, unpacked once, and
patched copies of it that never change the unpacked original.

The original tree is unpacked once per package version (tmp dir + rename: never half a
tree). Each build configuration gets a work tree made of hard links to it (`cp -al`, a few
seconds, no space); patches are applied there with `git apply`, which replaces a file
rather than writing into it, so the original keeps its content. Before the next build the
files the last patches touched are restored as fresh copies (new mtime), so make rebuilds
exactly what a patch changed, added or removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import catalogue, paths

Progress = Callable[[str], None]

# --source VALUE -> Debian's package holding that series' tree (as a .tar.xz)
PACKAGES = {"6.12": "linux-source-6.12", "7.2": "linux-source-7.2", "7.3": "linux-source-7.3"}


def kbuild_dir() -> Path:
    """Sources, work trees and object trees of built kernels (a cache: safe to delete)."""
    return paths.cache_dir() / "kbuild"


@dataclass(frozen=True)
class Source:
    """A tree to build: `identity` names its content (package=version, or a path)."""

    series: str  # "7.2", or the directory's name
    identity: str
    tree: Path
    pristine: bool  # True: labkit's own unpacked copy (patches go to a work tree)


def _quiet(_: str) -> None:
    pass


# -- downloading -------------------------------------------------------------------------


def fetch_source_deb(series: str, progress: Progress = _quiet) -> tuple[Path, str]:
    """Download linux-source-SERIES (or reuse it): the .deb and its `package=version`.

    Through labkit's own apt configuration and lists (the kernel catalogue's: the suites
    that carry kernels, on the machine's mirror), never /etc/apt's.
    """
    package = PACKAGES[series]
    catalogue.update(progress=progress)
    out = catalogue.run(["apt-cache", *catalogue.apt_options(), "show", "--no-all-versions",
                         package], "apt-cache show")
    fields = dict(re.findall(r"^(Version|Size|SHA256): (\S+)", out, re.M))
    if "Version" not in fields:
        raise LabkitError(f"The mirror has no {package}.",
                          hint="Check the Debian mirror in /etc/apt/sources.list(.d).")
    version = fields["Version"]
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / f"{package}_{version.replace(':', '%3a')}_all.deb"
    if final.is_file() and final.stat().st_size == int(fields.get("Size", -1)):
        return final, f"{package}={version}"
    size = int(fields.get("Size", 0)) / 1e6
    progress(f"downloading {package} {version} ({size:.0f} MB)")
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=downloads) as tmp:
        os.chmod(tmp, 0o755)  # lets apt's _apt user write, avoiding its sandbox warning
        catalogue.run(["apt-get", *catalogue.apt_options(), "-q", "download",
                       f"{package}={version}"], "apt-get download", cwd=tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1 or ("SHA256" in fields and _sha256(debs[0]) != fields["SHA256"]):
            raise LabkitError(f"The download of {package} is incomplete or does not match "
                              "apt's SHA256.", hint="Run the build again.")
        os.replace(debs[0], final)
    return final, f"{package}={version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- unpacking ---------------------------------------------------------------------------


def debian_source(series: str, progress: Progress = _quiet) -> Source:
    """linux-source-SERIES unpacked under the kbuild cache (once per package version)."""
    deb, identity = fetch_source_deb(series, progress)
    root = kbuild_dir() / "src"
    final = root / identity.replace("=", "_")
    if (final / "Makefile").is_file():
        return Source(series, identity, final, True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        progress(f"unpacking {deb.name} (about 30 s)")
        script = ('dpkg-deb --fsys-tarfile "$1" | tar -xO --wildcards "./usr/src/*.tar.xz" '
                  '| xz -dc -T0 | tar -x -C "$2"')
        _run(["sh", "-c", script, "sh", str(deb), str(tmp)], "unpacking linux-source")
        tops = [p for p in tmp.iterdir() if (p / "Makefile").is_file()]
        if len(tops) != 1:
            raise LabkitError(f"{deb.name} does not hold one kernel tree.",
                              hint="Delete it from the downloads cache and build again.")
        os.replace(tops[0], final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Source(series, identity, final, True)


def user_source(path: Path) -> Source:
    """A user's kernel tree, built out of tree (O=) so that it stays clean."""
    tree = path.resolve()
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise UsageError(f"{path} is not a kernel source tree (no Makefile and Kconfig).",
                         hint="Give --source 7.2, 6.12 or the top of a Linux tree.")
    if (tree / ".config").exists() or (tree / "include/config").is_dir():
        raise UsageError(
            f"{tree} has been configured or built in place, so an out-of-tree build "
            "cannot use it.",
            hint=f"Run `make -C {tree} mrproper` (it removes the in-tree build), or build "
            "it yourself and give `--kernel {tree}` to labkit.",
        )
    return Source(tree.name, f"dir:{tree}", tree, False)


# -- patches -----------------------------------------------------------------------------


def read_patches(patches: Iterable[Path]) -> list[tuple[Path, bytes]]:
    out = []
    for p in patches:
        try:
            out.append((p, p.read_bytes()))
        except OSError as exc:
            raise UsageError(f"Cannot read the patch {p}: {exc.strerror}.",
                             hint="Give a unified diff (git format-patch or diff -u) "
                             "with --patch.") from exc
    return out


def touched_files(tree: Path, patches: list[Path]) -> list[str]:
    """Paths (relative to the tree) the patches create, change or delete."""
    if not patches:
        return []
    out = _git_apply(tree, ["--numstat", *map(str, patches)])
    files = []
    for line in out.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            files += [f for f in re.split(r"\s*=>\s*|[{}]", parts[2]) if f]
    return list(dict.fromkeys(files))


def check_patches(tree: Path, patches: list[Path]) -> None:
    """Refuse patches that do not apply to the tree, naming the file and the hunk.

    Nothing is written: `git apply --check` works in memory. Patches are checked in order,
    each on top of the previous ones, so the first that fails is the one named.
    """
    patches = [p.absolute() for p in patches]  # git runs in the tree, not where the user is
    for i in range(len(patches)):
        res = _git_apply(tree, ["--check", *map(str, patches[: i + 1])], check=False)
        if res.returncode != 0:
            raise UsageError(
                f"The patch {patches[i]} does not apply to {tree.name}"
                f"{' on top of the patches before it' if i else ''}: "
                f"{_describe_failure(patches[i], res.stderr)}",
                hint="Rebase the patch on this kernel's source (the tree is in "
                f"{tree}), or pick the --source it was written for. Nothing was built.",
            )


def _describe_failure(patch: Path, stderr: str) -> str:
    """git's "patch failed: FILE:LINE", with the hunk header of that patch."""
    m = re.search(r"patch failed: (\S+):(\d+)", stderr)
    if not m:
        lines = [ln.removeprefix("error: ") for ln in stderr.strip().splitlines()]
        return " / ".join(lines[-3:]) or "git apply refused it"
    file, line = m.group(1), int(m.group(2))
    hunk = _hunk_at(patch, file, line)
    return f"the hunk {hunk + ' ' if hunk else ''}of {file} (at line {line}) does not match."


def _hunk_at(patch: Path, file: str, line: int) -> str:
    current = None
    for raw in patch.read_text(errors="replace").splitlines():
        if raw.startswith("+++ ") or raw.startswith("--- "):
            name = raw[4:].split("\t")[0]
            if name != "/dev/null":
                current = name.split("/", 1)[1] if "/" in name else name
        m = re.match(r"@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@.*", raw)
        if m and current == file and int(m.group(1)) == line:
            return m.group(0)
    return ""


def _git_apply(tree: Path, args: list[str], check: bool = True) -> subprocess.CompletedProcess[
        str]:
    env = dict(os.environ, LC_ALL="C", GIT_CEILING_DIRECTORIES=str(tree.parent))
    res = subprocess.run(["git", "apply", *args], cwd=tree, capture_output=True, text=True,
                         env=env, check=False)
    if check and res.returncode != 0:
        raise UsageError(f"git apply {args[0]} failed: {res.stderr.strip()}",
                         hint="Give unified diffs made against the top of the tree (-p1).")
    return res


# -- work trees --------------------------------------------------------------------------

STATE = "worktree.json"


def work_tree(source: Source, slot: Path, patches: list[Path], progress: Progress) -> Path:
    """The tree make sees: the source itself, or a hard-linked copy with the patches.

    The copy's state file lists what the last patches touched; those files are restored
    from the original (as fresh copies, so make sees them as changed) before this build's
    patches are applied. The list is written before patching, so an interrupted build is
    repaired by the next one.
    """
    if not source.pristine:
        return source.tree
    work = slot / "src"
    if not (work / "Makefile").is_file():
        progress("making the work tree (hard links to the unpacked source)")
        tmp = slot / ".src-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["cp", "-al", str(source.tree), str(tmp)], "cp -al")
        os.replace(tmp, work)
    state_file = slot / STATE
    old: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(state_file.read_text())["touched"]
    new = touched_files(source.tree, patches)
    state_file.write_text(json.dumps({"touched": sorted(set(old) | set(new))}))
    for rel in old:
        _restore(source.tree, work, rel)
    if patches:
        progress(f"applying {len(patches)} patch(es)")
        _git_apply(work, [*map(str, patches)])
    state_file.write_text(json.dumps({"touched": new}))
    for rel in set(old) | set(new):  # make must see each as changed, even when restored
        with contextlib.suppress(FileNotFoundError):
            os.utime(work / rel)
    return work


def _restore(original: Path, work: Path, rel: str) -> None:
    """Put back the original file (a copy, never a link) or remove a file a patch added."""
    target = work / rel
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    src = original / rel
    if src.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        shutil.copymode(src, target)


def _run(argv: list[str], what: str, cwd: str | None = None) -> str:
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, check=False)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise LabkitError(f"{what} failed (exit status {res.returncode}): {' / '.join(detail)}",
                          hint="Check the network and free space, then build again.")
    return res.stdout
