"""`labkit kernel build`: a small VM kernel from source, with patches, as a cached kernel.

The result is an ordinary entry of the kernel cache, `built:NAME`, so `--kernel built:NAME`
and `--vm built:NAME` boot it like a Debian kernel. It is keyed by a hash of what went in
(the source's identity, the patches' and fragments' contents, labkit's configuration
recipe and the compiler): asking again for the same thing returns at once without make.
Object trees are kept per (source, configuration), so another patch set rebuilds only
what the patches change. Nothing half-built ever enters the kernel cache: the entry is
assembled in a temporary directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import kconfig, kernelcache, kernels, paths, sourcetree

Progress = Callable[[str], None]
BUILD_META = "build.json"
PREFIX = "built:"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# compile steps (CC lines) of the minimal 7.2 configuration, for the first build's
# percentage; later builds of a configuration use the previous build's own count
FIRST_ESTIMATE = 1650
SOURCE_BYTES = 2_100_000_000  # an unpacked linux-source tree plus its .deb
OBJ_BYTES = 1_200_000_000  # an object tree of the minimal configuration, with margin

# tool -> Debian package that provides it (what setup.sh installs)
TOOLS = {"make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc",
         "git": "git", "perl": "perl", "xz": "xz-utils", "dpkg-deb": "dpkg",
         "depmod": "kmod"}
HEADERS = {"/usr/include/gelf.h": "libelf-dev"}  # objtool


def _quiet(_: str) -> None:
    pass


@dataclass
class Result:
    kernel: kernels.Kernel
    cached: bool  # True: nothing was built, the entry already matched
    log: str  # the build log ("" when nothing was built)
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    compiled: int = 0  # compile steps make ran
    key: str = ""

    def to_json(self) -> dict[str, object]:
        return {"kernel": self.kernel.to_json(), "cached": self.cached, "log": self.log,
                "seconds": round(self.seconds, 1), "compiled": self.compiled,
                "phases": {k: round(v, 1) for k, v in self.phases.items()}, "key": self.key}


def build(source: str, patches: Sequence[str | Path] = (), fragments: Sequence[str | Path] = (),
          name: str | None = None, jobs: int | None = None, progress: Progress = _quiet,
          on_percent: Callable[[int, int], None] | None = None) -> Result:
    """Build (or reuse) the kernel of `source` ("7.2", "6.12" or a kernel tree) with the
    patches (applied in order) and config fragments; returns it as `built:NAME`."""
    started = time.monotonic()
    phases: dict[str, float] = {}
    patch_paths = [Path(p).absolute() for p in patches]  # git apply runs in the tree
    frag_texts = [kconfig.read_fragment(Path(f)) for f in fragments]
    patch_data = sourcetree.read_patches(patch_paths)
    if name is not None and not NAME_RE.fullmatch(name.removeprefix(PREFIX)):
        raise UsageError(f"{name!r} is not a valid kernel name.",
                         hint="Use letters, digits, '.', '_' and '-' (at most 64).")
    is_dir = source not in sourcetree.PACKAGES
    if is_dir and not Path(source).is_dir():
        raise UsageError(
            f"--source {source!r} is neither a known series nor a directory.",
            hint=f"Use one of {', '.join(sourcetree.PACKAGES)} (Debian's linux-source-X) "
            "or the path of a Linux source tree.",
        )
    if is_dir and patch_paths:
        raise UsageError("--patch works with --source 7.2/6.12 only, not with your own tree.",
                         hint="Commit or apply the patch in your tree and build it again.")
    check_tools()
    _check_space(source, is_dir)

    t = time.monotonic()
    src = (sourcetree.user_source(Path(source)) if is_dir
           else sourcetree.debian_source(source, progress))
    phases["source"] = time.monotonic() - t
    conf_key = _digest([kconfig.RECIPE, src.identity, kconfig.base_fragment(),
                        kconfig.features_fragment(), *frag_texts, _compiler()])
    key = _digest([conf_key, *(d.hex() for _, d in patch_data)])
    short = f"{src.series}-{key[:10]}"
    entry_name = PREFIX + (name.removeprefix(PREFIX) if name else short)

    if not is_dir:  # a user's tree may have changed: always let make decide
        hit = _cached(entry_name, key)
        if hit is not None:
            progress(f"{entry_name} is up to date (nothing to build)")
            return Result(hit, True, "", time.monotonic() - started, phases, 0, key)

    if patch_paths:
        t = time.monotonic()
        progress(f"checking that {len(patch_paths)} patch(es) apply")
        sourcetree.check_patches(src.tree, patch_paths)
        phases["check patches"] = time.monotonic() - t

    slot = sourcetree.kbuild_dir() / "slots" / f"{_safe(src.identity)}-{conf_key[:12]}"
    slot.mkdir(parents=True, exist_ok=True)
    with _locked(slot / ".lock", progress, "another build of this configuration"):
        t = time.monotonic()
        tree = sourcetree.work_tree(src, slot, patch_paths, progress)
        phases["patch"] = time.monotonic() - t
        obj = slot / "obj"
        obj.mkdir(exist_ok=True)
        logs = sourcetree.kbuild_dir() / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{entry_name.removeprefix(PREFIX)}-{time.strftime('%Y%m%dT%H%M%S')}.log"
        with open(log, "w") as fh:
            fh.write(f"# labkit kernel build: {src.identity}, key {key}\n")
        t = time.monotonic()
        done = obj / ".labkit-configured"  # the slot is per configuration: once is enough
        if not done.is_file() or not (obj / ".config").is_file():
            progress("configuring (make allnoconfig + labkit's base + features + yours)")
            _configure(tree, obj, frag_texts, log, slot)
            done.write_text(conf_key + "\n")
        phases["configure"] = time.monotonic() - t

        t = time.monotonic()
        compiled = _make(tree, obj, jobs, log, slot, progress, on_percent)
        phases["make"] = time.monotonic() - t

        t = time.monotonic()
        release = _logged(["make", "-s", f"O={obj}", "kernelrelease"], tree, log,
                          "make kernelrelease").strip().splitlines()[-1]
        meta = {"key": key, "source": src.identity, "patches": [str(p) for p in patch_paths],
                "fragments": [str(f) for f in fragments], "log": str(log),
                "recipe": kconfig.RECIPE}
        kernel = install(entry_name, release, obj, meta)
        phases["install"] = time.monotonic() - t
    progress(f"built {entry_name} ({kernel.version}) in {time.monotonic() - started:.0f} s; "
             f"log: {log}")
    return Result(kernel, False, str(log), time.monotonic() - started, phases, compiled, key)


def default_name(source: str, patches: Sequence[str | Path] = (),
                 fragments: Sequence[str | Path] = ()) -> str | None:
    """The `built:NAME` a build of these inputs gets, if its source is already known
    locally (None otherwise: the package version decides the identity)."""
    if source not in sourcetree.PACKAGES:
        return None
    roots = sorted((sourcetree.kbuild_dir() / "src").glob(
        f"{sourcetree.PACKAGES[source]}_*"))
    if not roots:
        return None
    identity = roots[-1].name.replace("_", "=", 1)
    frag_texts = [kconfig.read_fragment(Path(f)) for f in fragments]
    conf_key = _digest([kconfig.RECIPE, identity, kconfig.base_fragment(),
                        kconfig.features_fragment(), *frag_texts, _compiler()])
    key = _digest([conf_key, *(Path(p).read_bytes().hex() for p in patches)])
    return f"{PREFIX}{source}-{key[:10]}"


# -- checks ------------------------------------------------------------------------------


def check_tools() -> None:
    """Refuse at once, naming the Debian packages, when a build tool is missing."""
    missing = [pkg for tool, pkg in TOOLS.items()
               if shutil.which(tool) is None and not Path("/sbin", tool).exists()]
    missing += [pkg for header, pkg in HEADERS.items() if not Path(header).is_file()]
    if missing:
        pkgs = " ".join(dict.fromkeys(missing))
        raise LabkitError(
            f"Building a kernel needs packages that are not installed: {pkgs}.",
            hint=f"Install them with `sudo apt-get install {pkgs}` (scripts/setup.sh "
            "installs them too).",
        )


def _check_space(source: str, is_dir: bool) -> None:
    root = sourcetree.kbuild_dir()
    root.mkdir(parents=True, exist_ok=True)
    need = OBJ_BYTES
    if not is_dir and not list((root / "src").glob(f"{sourcetree.PACKAGES[source]}_*")):
        need += SOURCE_BYTES
    free = shutil.disk_usage(root).free
    if free < need:
        raise LabkitError(
            f"A kernel build needs about {need / 1e9:.1f} GB free under {root}, and only "
            f"{free / 1e9:.1f} GB are.",
            hint=f"Free some space, or point LABKIT_CACHE_DIR at a larger disk. Old builds "
            f"can go: `rm -r {root}/slots` (a cache).",
        )


# -- configure, make, install ------------------------------------------------------------


def _configure(tree: Path, obj: Path, frag_texts: list[str], log: Path, slot: Path) -> None:
    frags = slot / "fragments"
    frags.mkdir(exist_ok=True)
    files = [frags / "00-base.config", frags / "10-features.config"]
    files[0].write_text(kconfig.base_fragment())
    files[1].write_text(kconfig.features_fragment())
    for i, text in enumerate(frag_texts, 1):
        files.append(frags / f"{20 + i:02d}-user.config")
        files[-1].write_text(text)
    for stale in frags.glob("*-user.config"):
        if stale not in files:
            stale.unlink()
    # merge only (-m), in the object tree, so nothing is written into the source tree;
    # then allnoconfig with the merged fragment as its preset, then olddefconfig
    _logged([str(tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(obj),
             *map(str, files)], obj, log, "merge_config.sh")
    os.replace(obj / ".config", obj / "labkit.fragment")
    _logged(["make", f"O={obj}", f"KCONFIG_ALLCONFIG={obj / 'labkit.fragment'}",
             "allnoconfig"], tree, log, "make allnoconfig")
    _logged(["make", f"O={obj}", "olddefconfig"], tree, log, "make olddefconfig")
    problems = kconfig.unmet((obj / ".config").read_text(), kconfig.wanted(frag_texts), tree)
    if problems:
        raise LabkitError(
            "The kernel configuration lacks options that were asked for:\n  "
            + "\n  ".join(problems),
            hint="Add the missing dependencies to a --config fragment (or drop the option); "
            f"the merged .config is {obj / '.config'}, the log {log}.",
        )


_STEP = re.compile(r"^\s+(CC|AS|HOSTCC|LD|AR)\s")


def _make(tree: Path, obj: Path, jobs: int | None, log: Path, slot: Path, progress: Progress,
          on_percent: Callable[[int, int], None] | None) -> int:
    """make bzImage, niced, its output in the log; percent = compile steps / last count."""
    jobs = jobs or os.cpu_count() or 1
    counts = slot / "steps.json"
    expected = FIRST_ESTIMATE
    with contextlib.suppress(OSError, ValueError, KeyError):
        expected = int(json.loads(counts.read_text())["full"])
    progress(f"compiling with {jobs} job(s), niced (log: {log})")
    argv = ["nice", "-n", "10", "make", f"O={obj}", f"-j{jobs}", "bzImage"]
    steps = 0
    last = 0.0
    with open(log, "a", buffering=1) as fh:  # line by line: `tail -f` the log
        fh.write(f"$ {' '.join(argv)}\n")
        proc = subprocess.Popen(argv, cwd=tree, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                env=dict(os.environ, LC_ALL="C"))
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                if _STEP.match(line):
                    steps += 1
                    now = time.monotonic()
                    if on_percent is not None and now - last > 0.5:
                        on_percent(steps, max(expected, steps))
                        last = now
            proc.wait()
        except BaseException:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    if proc.returncode != 0:
        raise LabkitError(f"The kernel build failed (make exit status {proc.returncode}):\n"
                          + _tail(log), hint=f"The whole log is kept: {log}")
    if on_percent is not None:
        on_percent(max(expected, steps), max(expected, steps))
    if steps > expected // 2 or not counts.exists():
        counts.write_text(json.dumps({"full": max(steps, 1)}))
    return steps


def install(entry_name: str, release: str, obj: Path, meta: dict[str, object]) -> kernels.Kernel:
    """The cache entry from an object tree: boot/vmlinuz-REL, boot/config-REL and
    lib/modules/REL with modules.builtin (so that modprobe of a built-in feature succeeds
    in the guest), assembled aside and renamed into place: never half an entry."""
    root = paths.kernels_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / entry_name
    tmp = root / f".{entry_name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "boot").mkdir(parents=True)
        shutil.copyfile(obj / "arch/x86/boot/bzImage", tmp / "boot" / f"vmlinuz-{release}")
        shutil.copyfile(obj / ".config", tmp / "boot" / f"config-{release}")
        mods = tmp / "lib" / "modules" / release
        mods.mkdir(parents=True)
        for f in ("modules.builtin", "modules.builtin.modinfo"):
            if (obj / f).is_file():
                shutil.copyfile(obj / f, mods / f)
            else:
                (mods / f).write_text("")
        (mods / "modules.order").write_text("")
        res = subprocess.run([_depmod(), "-b", str(tmp), release], capture_output=True,
                             text=True, check=False)
        if res.returncode != 0:
            raise LabkitError(f"depmod failed for {entry_name}: {res.stderr.strip()}",
                              hint="Is kmod installed (`sudo apt-get install kmod`)?")
        image = final / "boot" / f"vmlinuz-{release}"
        kernel = kernels.Kernel(
            name=entry_name, version=release, image=str(image), run_arg=str(image),
            modules_dir=str(final / "lib" / "modules" / release), source="built",
            package=str(meta.get("source", "")), package_version=str(meta.get("key", ""))[:16],
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (tmp / kernels.META).write_text(json.dumps(kernel.to_json(), indent=2) + "\n")
        (tmp / BUILD_META).write_text(json.dumps(meta, indent=2) + "\n")
        with kernelcache.cache_lock():
            kernelcache.install(tmp, entry_name)
        return kernel
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cached(entry_name: str, key: str) -> kernels.Kernel | None:
    entry = paths.kernels_dir() / entry_name
    try:
        meta = json.loads((entry / BUILD_META).read_text())
        kernel = kernels.Kernel(**json.loads((entry / kernels.META).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return kernel if meta.get("key") == key and Path(kernel.image).is_file() else None


# -- helpers -----------------------------------------------------------------------------


def _digest(parts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p.encode()).digest())
    return h.hexdigest()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:]


def _compiler() -> str:
    with contextlib.suppress(OSError):
        res = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False)
        return res.stdout.splitlines()[0] if res.stdout else ""
    return ""


def _depmod() -> str:
    return shutil.which("depmod") or "/sbin/depmod"


def _logged(argv: list[str], cwd: Path, log: Path, what: str) -> str:
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, errors="replace",
                         env=dict(os.environ, LC_ALL="C"), check=False)
    with open(log, "a") as fh:
        fh.write(res.stdout + res.stderr)
    if res.returncode != 0:
        raise LabkitError(f"{what} failed (exit status {res.returncode}):\n" + _tail(log),
                          hint=f"The whole log is kept: {log}")
    return res.stdout


def _tail(log: Path, n: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join("    " + ln for ln in log.read_text(errors="replace")
                         .splitlines()[-n:])
    return ""


@contextlib.contextmanager
def _locked(path: Path, progress: Progress, what: str) -> Iterator[None]:
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for {what} to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
