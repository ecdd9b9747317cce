"""Guest kernels: fetch Debian's, cache them unpacked, and resolve what `--kernel` names.

A kernel for the VM is a bzImage plus its modules: the features labs need (TIPC, kTLS,
netem, ...) are modules in distribution kernels. The cache keeps each kernel unpacked as a
tiny root (boot/vmlinuz-*, lib/modules/*) because that is the layout vng recognises: it
finds the modules next to the image and links them into the guest, so `modprobe` works
there without touching the host's /lib/modules.

Names (kernelnames): a series (debian-6.12: its newest build), a release (6.12.69,
debian-7.2.13, 7.3-rc7), an exact build (6.12.90+deb12.1, debian-6.1.0-56), `built:NAME`,
a cache directory's name, or a path. Every point release is cached side by side, in a
directory named after it (debian-6.12.69); entries written by older labkit (debian-6.12,
debian-6.1) stay valid and count as the build their kernel.json names.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import catalogue, kernelcache, paths
from labkit.hosts.vm import kernelnames as kn
from labkit.hosts.vm.catalogue import Available
from labkit.hosts.vm.kernelcache import META, Kernel, list_cached

__all__ = ["DEFAULT_KERNEL", "META", "SERIES", "Available", "Kernel", "accepts", "between",
           "bzimage_version", "cached", "fetch", "fetchable", "known_names", "list_cached",
           "resolve", "version_key"]

DEFAULT_KERNEL = "debian-6.12"
# The series worth suggesting by name; any other Debian name (kernelnames) works too.
SERIES = ("debian-6.1", "debian-6.12", "debian-7.2", "debian-7.3-rc")
version_key = kn.version_key

Progress = Callable[[str], None]
OnBytes = Callable[[int, int], None]


def _quiet(_: str) -> None:
    pass


def known_names() -> list[str]:
    """Kernel names to suggest: the well-known series and every cache entry's name."""
    return sorted(set(SERIES) | {k.name for k in list_cached() if "/" not in k.name},
                  key=lambda n: (not n.startswith(kn.PREFIX), kn.version_key(n), n))


def fetchable(name: str) -> bool:
    """Whether `fetch` can get the name from the mirror (by its form; whether the mirror
    has it is known only when asked)."""
    return kn.is_debian(name)


def accepts(name: str) -> bool:
    """Whether a topology/scenario may name this kernel without a path: `built:NAME`, a
    cache entry's name, or a Debian name that is cached or in the catalogue (fetched when
    first used). Offline: with no lists yet, a Debian name of a well-known series."""
    spec = kn.parse(name)
    if spec.kind == "built" or cached(name) is not None:
        return True
    if spec.kind == "other":
        return False
    items = _catalogue_if_present()
    if not items:
        return spec.series in SERIES
    return _match(spec, _available_builds(items)) is not None


# -- matching names to builds ------------------------------------------------------------


def _identity(k: Kernel) -> tuple[str, str] | None:
    """(release, abi) of a cached Debian kernel, from the package it was unpacked from."""
    m = catalogue._IMAGE_RE.fullmatch(k.package) if k.package else None
    if not m or not k.package_version:
        return None
    return kn.upstream_of(k.package_version), m["abi"]


def _match(spec: kn.Spec, builds: list[tuple[str, str, str, object]]) -> object | None:
    """The build a Debian name designates among (release, abi, package_version, item)."""
    if spec.kind == "series":
        pool = [b for b in builds if kn.series_of(b[0]) == spec.series]
        if not pool:
            return None
        home = min(catalogue._family(b[1]) for b in pool)  # Debian 12's builds first
        pool = [b for b in pool if catalogue._family(b[1]) == home]
        return max(pool, key=lambda b: (kn.version_key(b[0]),
                                        kn.debian_version_key(b[2])))[3]
    if spec.kind == "version":
        pool = [b for b in builds if b[0] == spec.version]
    elif spec.kind == "build":
        pool = [b for b in builds if b[0] == spec.version and "+" in b[1]
                and "+" + b[1].split("+", 1)[1] == spec.build]
    elif spec.kind == "abi":
        pool = [b for b in builds if b[1] == spec.build]
    else:
        return None
    if not pool:
        return None
    return min(pool, key=lambda b: catalogue.preference(b[1], b[2]))[3]


def _cached_builds() -> list[tuple[str, str, str, object]]:
    out: list[tuple[str, str, str, object]] = []
    for k in list_cached():
        ident = _identity(k) if k.source == "cache" else None
        if ident:
            out.append((ident[0], ident[1], k.package_version, k))
    return out


def _available_builds(items: list[Available]) -> list[tuple[str, str, str, object]]:
    return [(a.version, a.abi, a.package_version, a) for a in items]


def _catalogue_if_present() -> list[Available] | None:
    """The catalogue from the lists already on disk (no network), or None."""
    if catalogue.lists_age() is None:
        return None
    try:
        return catalogue.available(offline=True)
    except LabkitError:
        return None


def _unknown(spec: str, items: list[Available] | None) -> UsageError:
    names = [*known_names(), *(a.name for a in items or [])]
    return UsageError(
        f"Unknown kernel {spec}; {kn.unknown_hint(spec, names)}.",
        hint="See every kernel the mirror serves with `labkit vm kernels list --available`; "
        "a bzImage or a kernel build tree can be given by path.",
    )


# -- resolving --kernel ------------------------------------------------------------------


def cached(name: str) -> Kernel | None:
    """The cached kernel a name designates (a series: its newest cached build), or None."""
    spec = kn.parse(name)
    if spec.kind in ("series", "version", "build", "abi"):
        hit = _match(spec, _cached_builds())
        if hit is not None:
            return hit  # type: ignore[return-value]
    return kernelcache.read(name)


def resolve(spec: str) -> Kernel:
    """A kernel name (kernelnames), a cache entry's name, a bzImage, or a kernel build
    tree; errors say what to run."""
    if "/" not in spec and not spec.startswith("."):
        hit = cached(spec)
        if hit is not None:
            return hit
        parsed = kn.parse(spec)
        if parsed.kind == "built":
            raise UsageError(
                f"No kernel {spec} in the cache.",
                hint=f"Build it first with `labkit kernel build --name "
                f"{spec.removeprefix(kn.BUILT)} ...`; see `labkit vm kernels list`.",
            )
        if parsed.kind != "other":
            items = _catalogue_if_present()
            if items is not None and _match(parsed, _available_builds(items)) is None:
                raise _unknown(spec, items)
            raise UsageError(
                f"The kernel {spec} is not cached yet.",
                hint=f"Fetch it once with `sudo labkit vm kernels fetch {spec}` "
                "(70-130 MB from the Debian mirror).",
            )
        if not Path(spec).exists():
            raise _unknown(spec, _catalogue_if_present())
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
        return kernelcache.load_meta(meta)
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


# -- the catalogue, in kernel names ------------------------------------------------------


def lookup(spec: str, refresh: bool = False, progress: Progress = _quiet) -> Available:
    """The build of the mirror a Debian name designates; unknown names list near ones."""
    parsed = kn.parse(spec)
    if parsed.kind not in ("series", "version", "build", "abi"):
        raise _unknown(spec, None)
    items = catalogue.available(refresh=refresh, progress=progress)
    hit = _match(parsed, _available_builds(items))
    if hit is None:
        raise _unknown(spec, items)
    return hit  # type: ignore[return-value]


def between(lo: str, hi: str, *, refresh: bool = False, progress: Progress = _quiet,
            every_build: bool = False) -> list[Available]:
    """The builds from `lo` to `hi` inclusive, oldest first (for bisection): one per kernel
    release (its preferred build) unless every_build, the two ends always as named.

    The mirror's builds and the cached ones (a cached build the mirror no longer serves
    is included, with suite "cache"). Raises UsageError on an unknown end.
    """
    items = catalogue.available(refresh=refresh, progress=progress)
    served = {(a.package, a.package_version) for a in items}
    for k in list_cached():
        ident = _identity(k) if k.source == "cache" else None
        if ident and (k.package, k.package_version) not in served:
            items.append(Available(
                name=k.name, version=ident[0], series=kn.series_of(ident[0]), suite="cache",
                package=k.package, package_version=k.package_version, size=0, cached=True,
                abi=ident[1]))
    builds = _available_builds(items)
    ends = []
    for name in (lo, hi):
        hit = _match(kn.parse(name), builds)
        if hit is None:
            raise _unknown(name, items)
        ends.append(hit)
    a, b = sorted(ends, key=_order)  # type: ignore[arg-type]
    inside = [x for x in items if _order(a) <= _order(x) <= _order(b)]
    if not every_build:
        best: dict[str, Available] = {}
        for x in sorted(inside, key=lambda x: catalogue.preference(x.abi, x.package_version)):
            best.setdefault(x.version, x)
        keep = {id(x) for x in best.values()} | {id(a), id(b)}
        inside = [x for x in inside if id(x) in keep and
                  (x is a or x is b or x.version not in (a.version, b.version))]
    return sorted(inside, key=_order)


def _order(a: Available) -> tuple:
    return catalogue.build_key(a.version, a.abi, a.package_version)


# -- fetching ----------------------------------------------------------------------------


def fetch(
    name: str = DEFAULT_KERNEL, *, progress: Progress = _quiet, force: bool = False,
    on_bytes: OnBytes | None = None, refresh: bool = False,
) -> Kernel:
    """Download (or reuse) the build a name designates, unpack it and run depmod.

    Idempotent: when the cache already holds that build, nothing is downloaded. A series
    is looked up in the catalogue (refreshed when a day old) so it means its newest build.
    """
    parsed = kn.parse(name)
    if parsed.kind not in ("series", "version", "build", "abi"):
        have = kernelcache.read(name)
        if have is not None:
            return have
        if parsed.kind == "built":
            raise UsageError(f"No kernel {name} in the cache; built kernels are not fetched.",
                             hint="Build it with `labkit kernel build --name "
                             f"{name.removeprefix(kn.BUILT)} ...`.")
        raise _unknown(name, _catalogue_if_present())
    _need_tools(["apt-get", "dpkg-deb", "depmod"])
    try:
        want = lookup(name, refresh=refresh, progress=progress)
    except LabkitError as exc:
        have = cached(name)
        if have is None or isinstance(exc, UsageError):
            raise
        progress(f"cannot read the catalogue ({exc.message}); using the cached {have.name}")
        return have
    with kernelcache.cache_lock():
        have = next((k for k in list_cached() if k.package == want.package
                     and k.package_version == want.package_version), None)
        if have is not None and not force:
            progress(f"{want.name} is already cached as {have.name} ({have.version})")
            return have
        _check_space(want)
        debs = _download(want, progress, on_bytes)
        return _unpack(want, debs, progress)


def _check_space(want: Available) -> None:
    """The .debs, then the unpacked tree (about twice their size), with some margin."""
    need = want.size * 4
    for where in (paths.downloads_dir(), paths.kernels_dir()):
        probe = where
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free < need:
            raise LabkitError(
                f"Not enough disk space for {want.name}: it needs about {need / 1e6:.0f} MB "
                f"in {where} (download and unpacked), and {free / 1e6:.0f} MB are free.",
                hint="Free some space, or remove cached kernels you no longer need "
                f"(`sudo rm -r {paths.kernels_dir()}/NAME`).",
            )


def _download(want: Available, progress: Progress, on_bytes: OnBytes | None) -> list[Path]:
    """Every .deb of the build (catalogue.download: reused when complete, else fetched)."""
    for stale in paths.downloads_dir().glob(".dl-*"):  # a killed fetch's partial download
        shutil.rmtree(stale, ignore_errors=True)  # (we hold the cache lock: nobody else is)
    done = 0
    out = []
    progress(f"downloading {want.package} {want.package_version} "
             f"({want.size / 1e6:.0f} MB, {want.suite})")
    for deb in want.debs:
        moved = (lambda n, base=done: on_bytes(base + n, want.size)) if on_bytes else None
        path = catalogue.download(deb, progress, moved)
        done += deb.size
        if on_bytes:
            on_bytes(done, want.size)
        out.append(path)
    return out


def _unpack(want: Available, debs: list[Path], progress: Progress) -> Kernel:
    """Unpack into a temporary directory, index the modules, then rename it into place:
    an interruption leaves no entry (only a .NAME.* directory, removed here or next time)."""
    root = paths.kernels_dir()
    name = want.name
    for stale in root.glob(f".{name}.*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a fetch that was killed
    final = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        os.chmod(tmp, 0o755)
        for deb in debs:
            progress(f"unpacking {deb.name}")
            catalogue.run(["dpkg-deb", "-x", str(deb), str(tmp)], "dpkg-deb -x")
        _normalise_layout(tmp)
        images = sorted((tmp / "boot").glob("vmlinuz-*"))
        if not images:
            raise LabkitError(f"{want.package} holds no boot/vmlinuz-*.",
                              hint="Is it a kernel image package?")
        version = images[-1].name.removeprefix("vmlinuz-")
        progress(f"indexing modules of {version} (depmod)")
        catalogue.run(["depmod", "-b", str(tmp), version], "depmod")
        image = str(final / "boot" / images[-1].name)
        kernel = Kernel(
            name=name, version=version, image=image, run_arg=image,
            modules_dir=str(final / "lib" / "modules" / version), source="cache",
            package=want.package, package_version=want.package_version,
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (tmp / META).write_text(json.dumps(kernel.to_json(), indent=2, sort_keys=True) + "\n")
        kernelcache.install(tmp, name)
        progress(f"cached {name} ({version}) in {final}")
        return kernel
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _normalise_layout(root: Path) -> None:
    """Give every kernel the layout of Debian 12's packages, which vng and build_kmod.sh
    read: boot/vmlinuz-VER, boot/config-VER, lib/modules/VER. Since 7.x Debian ships
    usr/lib/modules/VER/{vmlinuz,config,System.map} (split linux-binary/-modules/-base)."""
    usr = root / "usr" / "lib" / "modules"
    if not usr.is_dir():
        return
    (root / "lib").mkdir(exist_ok=True)
    mods = root / "lib" / "modules"
    if not mods.exists():
        os.replace(usr, mods)
    (root / "boot").mkdir(exist_ok=True)
    for vdir in mods.iterdir():
        for src, dst in (("vmlinuz", "vmlinuz"), ("config", "config"),
                         ("System.map", "System.map")):
            if (vdir / src).is_file() and not (root / "boot" / f"{dst}-{vdir.name}").exists():
                os.replace(vdir / src, root / "boot" / f"{dst}-{vdir.name}")


def _need_tools(tools: list[str]) -> None:
    missing = [t for t in tools if shutil.which(t) is None and not Path("/sbin", t).exists()]
    if missing:
        raise LabkitError(
            f"Fetching a kernel needs {', '.join(missing)}, which is not installed.",
            hint="This works on Debian/Ubuntu hosts; install `kmod` for depmod "
            "(`sudo apt-get install kmod`).",
        )
