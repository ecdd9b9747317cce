"""Guest kernels: fetch Debian's, cache them unpacked, and resolve what `--kernel` names.

A kernel for the VM is a bzImage plus its modules: the features labs need (TIPC, kTLS,
netem, ...) are modules in distribution kernels. The cache keeps each kernel unpacked as a
tiny root (boot/vmlinuz-*, lib/modules/*) because that is the layout vng recognises: it
finds the modules next to the image and links them into the guest, so `modprobe` works
there without touching the host's /lib/modules.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import paths

DEFAULT_KERNEL = "debian-6.12"
META = "kernel.json"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Series:
    """A family of Debian packages of which `fetch` takes the newest."""

    name: str
    pattern: str  # the package name as apt-cache's POSIX regex sees it
    package_re: str  # the same as a Python full-match regex, group 1 = what sorts them
    label: str  # for messages
    hint: str  # what to do when apt knows no such package


SERIES: dict[str, Series] = {
    "debian-6.12": Series(
        name="debian-6.12",
        pattern=r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
        package_re=r"linux-image-(6\.12\.\d+)\+deb12-amd64",
        label="linux-image-6.12.*+deb12-amd64",
        hint="It comes from bookworm-security: check that `deb http://deb.debian.org/"
        "debian-security bookworm-security main` is in /etc/apt/sources.list(.d).",
    ),
    # Debian 12's own kernel (what linux-image-amd64 depends on); the ABI number sorts it.
    "debian-6.1": Series(
        name="debian-6.1",
        pattern=r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        package_re=r"linux-image-6\.1\.0-(\d+)-amd64",
        label="linux-image-6.1.0-*-amd64",
        hint="It is Debian 12's own kernel: check that a bookworm (and bookworm-security) "
        "line is in /etc/apt/sources.list(.d) and run `sudo apt-get update`.",
    ),
}


@dataclass(frozen=True)
class Kernel:
    """What vng boots: `run_arg` is given to `vng --run`, `image` is the bzImage itself."""

    name: str
    version: str  # the guest's `uname -r`; "" when it cannot be read from the image
    image: str
    run_arg: str
    modules_dir: str  # "" when the kernel has no modules labkit knows of
    source: str  # "cache" | "image" | "tree"
    package: str = ""
    package_version: str = ""
    fetched_at: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def known_names() -> list[str]:
    """Kernel names labkit can fetch or has cached (what `kernel:` and `--vm` accept)."""
    return sorted(set(SERIES) | {k.name for k in list_cached() if "/" not in k.name})


# -- resolving --kernel ------------------------------------------------------------------


def resolve(spec: str) -> Kernel:
    """A cached kernel's name, a bzImage, or a kernel build tree; errors say what to run."""
    if "/" not in spec and not spec.startswith("."):
        cached = _read_cached(spec)
        if cached is not None:
            return cached
        if spec in SERIES:
            raise UsageError(
                f"The kernel {spec} is not cached yet.",
                hint=f"Fetch it once with `sudo labkit vm kernels fetch {spec}` "
                "(about 110 MB from Debian's mirror).",
            )
        if not Path(spec).exists():
            known = ", ".join(sorted(set(SERIES) | {k.name for k in list_cached()}))
            raise UsageError(
                f"Unknown kernel {spec!r}.",
                hint=f"Use one of: {known}, or a path to a bzImage or a kernel build tree.",
            )
    path = Path(spec).resolve()
    if path.is_file():
        version = bzimage_version(path)
        return Kernel(
            name=str(path), version=version, image=str(path), run_arg=str(path),
            modules_dir=_modules_beside(path, version), source="image",
        )
    if path.is_dir():
        return _resolve_dir(path)
    raise UsageError(
        f"The kernel {spec} does not exist.",
        hint="Give a cached kernel name (see `labkit vm kernels list`), a bzImage, or a "
        "kernel build tree.",
    )


def _resolve_dir(path: Path) -> Kernel:
    meta = path / META
    if meta.is_file():  # an unpacked cache entry given by path
        return _load_meta(meta)
    bz = path / "arch/x86/boot/bzImage"
    if bz.is_file():
        has_mods = (path / "modules.order").is_file()
        return Kernel(
            name=str(path), version=bzimage_version(bz), image=str(bz), run_arg=str(path),
            modules_dir=str(path) if has_mods else "", source="tree",
        )
    images = sorted((path / "boot").glob("vmlinuz-*"))
    if images:
        image = images[-1]
        version = bzimage_version(image)
        return Kernel(
            name=str(path), version=version, image=str(image), run_arg=str(image),
            modules_dir=_modules_beside(image, version), source="image",
        )
    raise UsageError(
        f"{path} is neither a kernel build tree nor an unpacked kernel.",
        hint="A build tree has arch/x86/boot/bzImage (build it with `make bzImage modules`); "
        "an unpacked kernel has boot/vmlinuz-*.",
    )


def _modules_beside(image: Path, version: str) -> str:
    """vng looks for <image dir>/../lib/modules/<version>; report it when present."""
    if not version:
        return ""
    mods = image.parent.parent / "lib" / "modules" / version
    return str(mods) if mods.is_dir() else ""


def bzimage_version(path: Path) -> str:
    """The `uname -r` string stored in a bzImage's setup header ("" if not a bzImage).

    Boot protocol: "HdrS" at 0x202, and at 0x20E the offset (minus 0x200) of a
    NUL-terminated string that starts with the release.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(0x10000)
    except OSError:
        return ""
    if head[0x202:0x206] != b"HdrS":
        raise UsageError(
            f"{path} is not a bootable x86 kernel image (no bzImage header).",
            hint="Give arch/x86/boot/bzImage or a /boot/vmlinuz-* file, not vmlinux.",
        )
    (offset,) = struct.unpack_from("<H", head, 0x20E)
    raw = head[offset + 0x200 : offset + 0x200 + 256].split(b"\0")[0]
    return raw.decode(errors="replace").split(" ")[0] if raw else ""


# -- the cache ---------------------------------------------------------------------------


def cached(name: str) -> Kernel | None:
    """The cached kernel of that name, or None."""
    return _read_cached(name)


def _read_cached(name: str) -> Kernel | None:
    meta = paths.kernels_dir() / name / META
    return _load_meta(meta) if meta.is_file() else None


def _load_meta(meta: Path) -> Kernel:
    try:
        data = json.loads(meta.read_text())
        return Kernel(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise LabkitError(
            f"The kernel cache entry {meta.parent} is damaged ({exc}).",
            hint=f"Remove it (`sudo rm -r {meta.parent}`) and fetch the kernel again.",
        ) from exc


def list_cached() -> list[Kernel]:
    root = paths.kernels_dir()
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not (entry / META).is_file():
            continue
        with contextlib.suppress(LabkitError):
            found.append(_load_meta(entry / META))
    return found


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """Two fetches at once would unpack into the same place; serialise them."""
    root = paths.kernels_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# -- fetching ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AptPackage:
    name: str
    version: str  # Debian version, e.g. 6.12.117-1~deb12u1
    upstream: str  # what the series sorts by: 6.12.117, or the ABI number 56 for 6.1
    size: int
    sha256: str


def fetch(
    name: str = DEFAULT_KERNEL, *, progress: Progress = _quiet, force: bool = False,
    on_bytes: Callable[[int, int], None] | None = None,
) -> Kernel:
    """Download (or reuse) the newest package of the series, unpack it and run depmod.

    Idempotent: when the cache already holds the newest package, nothing is done.
    """
    series = SERIES.get(name)
    if series is None:
        raise UsageError(
            f"labkit does not know how to fetch the kernel {name!r}.",
            hint=f"Fetchable kernels: {', '.join(SERIES)}. Any other kernel can be given "
            "by path: `--kernel path/to/bzImage` or `--kernel path/to/build-tree`.",
        )
    _need_tools(["apt-cache", "apt-get", "dpkg-deb", "depmod"])
    with _cache_lock():
        progress(f"looking up the newest {series.label} package")
        pkg = newest_package(series, progress)
        cached = _read_cached(name)
        if cached and cached.package == pkg.name and cached.package_version == pkg.version:
            if not force:
                progress(f"{name} is already cached ({cached.version})")
                return cached
        deb = _download(pkg, progress, on_bytes)
        return _unpack(name, pkg, deb, progress)


def newest_package(series: Series, progress: Progress = _quiet) -> AptPackage:
    names = _apt_search(series)
    if not names:
        progress("no candidate in apt's lists; running apt-get update")
        _run(["apt-get", "update"], "apt-get update")
        names = _apt_search(series)
    if not names:
        raise LabkitError(f"apt knows no package named {series.label}.", hint=series.hint)
    best = max(names, key=lambda n: _version_key(re.fullmatch(series.package_re, n)))
    return _apt_show(best, re.fullmatch(series.package_re, best).group(1))  # type: ignore[union-attr]


def _version_key(match: re.Match[str] | None) -> tuple[int, ...]:
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def _apt_search(series: Series) -> list[str]:
    out = _run(["apt-cache", "search", "--names-only", series.pattern], "apt-cache search")
    names = [line.split(" ", 1)[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if re.fullmatch(series.package_re, n)]


def _apt_show(name: str, upstream: str) -> AptPackage:
    out = _run(["apt-cache", "show", "--no-all-versions", name], "apt-cache show")
    fields: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("Version", "Size", "SHA256") and key not in fields:
            fields[key] = value.strip()
    try:
        return AptPackage(
            name=name, version=fields["Version"], upstream=upstream,
            size=int(fields["Size"]), sha256=fields["SHA256"],
        )
    except (KeyError, ValueError) as exc:
        raise LabkitError(
            f"apt-cache show {name} lacks Version/Size/SHA256.",
            hint="Run `sudo apt-get update` and try again.",
        ) from exc


def _download(pkg: AptPackage, progress: Progress,
              on_bytes: Callable[[int, int], None] | None = None) -> Path:
    """Reuse a complete .deb from the downloads cache (checked by SHA256), else download."""
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    for candidate in sorted(downloads.glob(f"{pkg.name}_*.deb")):
        if candidate.stat().st_size == pkg.size:
            progress(f"checking {candidate.name}")
            if _sha256(candidate) == pkg.sha256:
                progress(f"reusing {candidate}")
                return candidate
    size_mb = pkg.size / 1e6
    progress(f"downloading {pkg.name} {pkg.version} ({size_mb:.0f} MB)")
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=downloads) as tmp:
        os.chmod(tmp, 0o755)  # lets apt's _apt user write, avoiding its sandbox warning
        _run(["apt-get", "download", f"{pkg.name}={pkg.version}"], "apt-get download", cwd=tmp,
             watch=(lambda: on_bytes(_bytes_in(tmp), pkg.size)) if on_bytes else None)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1 or _sha256(debs[0]) != pkg.sha256:
            raise LabkitError(
                f"The download of {pkg.name} is incomplete or does not match apt's SHA256.",
                hint="Run `sudo apt-get update` and fetch again.",
            )
        final = downloads / debs[0].name
        os.replace(debs[0], final)
    return final


def _unpack(name: str, pkg: AptPackage, deb: Path, progress: Progress) -> Kernel:
    root = paths.kernels_dir()
    final = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        os.chmod(tmp, 0o755)
        progress(f"unpacking {deb.name}")
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], "dpkg-deb -x")
        images = sorted((tmp / "boot").glob("vmlinuz-*"))
        if not images:
            raise LabkitError(f"{deb.name} holds no boot/vmlinuz-*.", hint="Is it a kernel image?")
        version = images[-1].name.removeprefix("vmlinuz-")
        progress(f"indexing modules of {version} (depmod)")
        _run(["depmod", "-b", str(tmp), version], "depmod")
        image = str(final / "boot" / images[-1].name)
        kernel = Kernel(
            name=name, version=version, image=image, run_arg=image,
            modules_dir=str(final / "lib" / "modules" / version), source="cache",
            package=pkg.name, package_version=pkg.version,
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (tmp / META).write_text(json.dumps(kernel.to_json(), indent=2, sort_keys=True) + "\n")
        old = None
        if final.exists():
            old = root / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        progress(f"cached {name} ({version}) in {final}")
        return kernel
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _need_tools(tools: list[str]) -> None:
    missing = [t for t in tools if shutil.which(t) is None and not Path("/sbin", t).exists()]
    if missing:
        raise LabkitError(
            f"Fetching a kernel needs {', '.join(missing)}, which is not installed.",
            hint="This works on Debian/Ubuntu hosts; install `kmod` for depmod "
            "(`sudo apt-get install kmod`).",
        )


def _bytes_in(directory: str) -> int:
    """Bytes written so far under a directory (apt's partial download included)."""
    total = 0
    for root, _, files in os.walk(directory):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_size
    return total


def _run(argv: list[str], what: str, cwd: str | None = None,
         watch: Callable[[], None] | None = None) -> str:
    """Run a tool to completion; `watch` is called a few times a second meanwhile."""
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    if shutil.which(argv[0]) is None and Path("/sbin", argv[0]).exists():
        argv = [f"/sbin/{argv[0]}", *argv[1:]]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env)
    while True:
        try:
            out, err = proc.communicate(timeout=0.3)
            break
        except subprocess.TimeoutExpired:
            if watch is not None:
                watch()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise LabkitError(
            f"{what} failed (exit status {res.returncode}): {' / '.join(detail)}",
            hint="Fetching a kernel needs root and network access to the Debian mirror.",
        )
    return res.stdout
