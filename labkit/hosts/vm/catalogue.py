"""The kernel catalogue: every Debian kernel build the machine's mirror serves.

labkit keeps its own apt configuration and lists under its state directory (paths.apt_dir)
for the suites that carry kernels (Debian 12 and its backports/security, trixie, sid,
experimental), on the mirror the machine's own apt sources name, so the system's apt
(/etc/apt, its lists, its pinning) is never touched and never consulted for kernels.
apt itself downloads, verifies signatures and hashes; labkit only points it elsewhere.
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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit.errors import LabkitError
from labkit.hosts.vm import kernelnames as kn
from labkit.hosts.vm import paths

Progress = Callable[[str], None]

# (suite, which mirror): the security suite lives on the security mirror.
SUITES = (
    ("bookworm", "main"), ("bookworm-updates", "main"), ("bookworm-security", "security"),
    ("bookworm-backports", "main"), ("trixie", "main"), ("sid", "main"),
    ("experimental", "main"),
)
MAX_AGE = 24 * 3600  # lists older than this are refreshed before use
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SYSTEM_SOURCES = Path("/etc/apt")
# linux-image-<abi>-amd64, where <abi> is 6.12.43+deb12, 6.1.0-57, 7.2.13+deb14 or 7.3
_IMAGE_RE = re.compile(r"linux-image-(?P<abi>\d+\.\d+(?:\.\d+)?(?:-\d+)?(?:\+deb[\d.]+)?)-amd64")
_FIELDS = {"Package", "Version", "Size", "SHA256", "Depends", "Source"}
_WANTED = re.compile(r"linux-(?:image|binary|modules|base|headers|kbuild|source)-\d")


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Deb:
    """One .deb to download: what apt-get download takes, and what to check it against."""

    package: str
    version: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Available:
    """One kernel build the mirror serves.

    name: the shortest name that designates exactly this build (debian-6.12.69, or
    debian-6.12.90+deb12 when another build of 6.12.90 is preferred); version: the kernel
    release; size: bytes to download (the image and, for split packages, its
    binary/modules/base parts); debs: those parts. The mirror keeps older point releases'
    images longer than their headers: `headers` says whether the offload NIC's module
    can be built for this one (scripts/build_kmod.sh).
    """

    name: str
    version: str
    series: str
    suite: str
    package: str
    package_version: str
    size: int
    cached: bool
    abi: str = ""
    headers: bool = False  # its linux-headers are served too (the offload NIC's module)
    debs: tuple[Deb, ...] = field(default=(), repr=False)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("debs")
        return data


# -- the private apt configuration ------------------------------------------------------


@dataclass(frozen=True)
class Mirror:
    main: str
    security: str
    keyring: str


def _source_entries(root: Path) -> list[dict[str, str]]:
    """Every `deb` entry of the machine's apt sources, deb822 and one-line alike."""
    entries: list[dict[str, str]] = []
    files = sorted((root / "sources.list.d").glob("*.sources"))
    for f in files:
        with contextlib.suppress(OSError):
            for stanza in re.split(r"\n\s*\n", f.read_text()):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                enabled = fields.get("enabled", "yes") != "no"
                if "deb" in fields.get("types", "").split() and enabled:
                    for uri in fields.get("uris", "").split():
                        entries.append({"uri": uri, "suites": fields.get("suites", ""),
                                        "keyring": fields.get("signed-by", "")})
    lists = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for f in lists:
        with contextlib.suppress(OSError):
            for line in f.read_text().splitlines():
                m = re.match(r"\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)",
                             line)
                if m:
                    km = re.search(r"signed-by=(\S+)", m["opts"] or "")
                    entries.append({"uri": m["uri"], "suites": m["suite"],
                                    "keyring": km[1] if km else ""})
    return entries


def mirror(root: Path = SYSTEM_SOURCES) -> Mirror:
    """The Debian mirror (and security mirror) the machine's own apt sources name."""
    entries = _source_entries(root)
    main = next((e for e in entries if any(s.startswith(("bookworm", "trixie", "sid", "stable"))
                                           and not s.endswith("-security")
                                           for s in e["suites"].split())), None)
    if main is None:
        raise LabkitError(
            f"No Debian entry in {root}/sources.list or {root}/sources.list.d: labkit reads the "
            "mirror to fetch kernels from there.",
            hint="Kernels are fetched from a Debian mirror: add your Debian mirror as a "
            "`deb MIRROR bookworm main` line (or a deb822 .sources entry).",
        )
    sec = next((e for e in entries if any(s.endswith("-security")
                                          for s in e["suites"].split())), None)
    security = sec["uri"] if sec else main["uri"].rstrip("/") + "-security"
    keyring = main["keyring"] if main["keyring"].startswith("/") else DEFAULT_KEYRING
    return Mirror(main=main["uri"], security=security, keyring=keyring)


def sources_text(m: Mirror) -> str:
    lines = ["# written by labkit: the suites that carry kernels, on the machine's mirror"]
    for suite, which in SUITES:
        uri = m.security if which == "security" else m.main
        lines.append(f"deb [signed-by={m.keyring}] {uri} {suite} main")
    return "\n".join(lines) + "\n"


def apt_options() -> list[str]:
    """What makes apt-get/apt-cache use labkit's sources and lists only (never /etc/apt's)."""
    d = paths.apt_dir()
    return [
        "-o", f"Dir::Etc::SourceList={d / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={d / 'lists'}",
        "-o", f"Dir::Cache={d / 'cache'}",
        "-o", "Dir::Etc::Preferences=/dev/null",
        "-o", "Dir::Etc::PreferencesParts=/dev/null",
        "-o", "APT::Architectures=amd64",
        "-o", "Acquire::Languages=none",
    ]


def _prepare() -> Path:
    d = paths.apt_dir()
    for sub in ("lists/partial", "cache/archives/partial"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    text = sources_text(mirror())
    src = d / "sources.list"
    if not src.is_file() or src.read_text() != text:
        src.write_text(text)
        with contextlib.suppress(FileNotFoundError):
            (d / "updated").unlink()  # new sources: the lists must be fetched again
    return d


def lists_age() -> float | None:
    """Seconds since the lists were refreshed, None if they never were."""
    stamp = paths.apt_dir() / "updated"
    with contextlib.suppress(OSError):
        return max(0.0, time.time() - stamp.stat().st_mtime)
    return None


def needs_update() -> bool:
    """Whether reading the catalogue now would fetch the lists (missing or a day old)."""
    age = lists_age()
    return age is None or age >= MAX_AGE


def update(refresh: bool = False, progress: Progress = _quiet) -> None:
    """Fetch the lists when missing, older than a day, or asked to; stale lists are used
    (with a warning) when the mirror cannot be reached."""
    d = _prepare()
    age = lists_age()
    if not refresh and age is not None and age < MAX_AGE:
        return
    why = "missing" if age is None else ("asked for" if refresh else f"{age / 3600:.0f} h old")
    progress(f"refreshing labkit's kernel lists ({why}; ~30 MB from the machine's mirror)")

    def line(text: str) -> None:
        m = re.match(r"(?:Get|Hit|Ign):\d+ \S+ (\S+)", text)
        if m:
            progress(f"  lists: {m[1]}")

    try:
        run(["apt-get", *apt_options(), "update"], "apt-get update", on_line=line)
    except LabkitError:
        if age is None:
            raise
        progress("could not refresh the kernel lists; using the ones from "
                 f"{age / 3600:.0f} h ago")
        return
    (d / "updated").touch()


# -- reading the lists -------------------------------------------------------------------


_packages_memo: dict[tuple[str, float], dict[tuple[str, str], dict[str, str]]] = {}


def packages(progress: Progress = _quiet) -> dict[tuple[str, str], dict[str, str]]:
    """Every linux-{image,binary,modules,base,headers,kbuild}-* stanza, by (package,
    version), with a "Suite" field added (the first suite that has it, in SUITES order)."""
    stamp = paths.apt_dir() / "updated"
    key = (str(paths.apt_dir()), stamp.stat().st_mtime if stamp.exists() else 0.0)
    if key in _packages_memo:
        return _packages_memo[key]
    index = paths.apt_dir() / "kernels.json"  # what this reads, kept until the next update
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(index.read_text())
        if data["stamp"] == key[1] and data.get("wanted") == _WANTED.pattern:
            found = {(f["Package"], f["Version"]): f for f in data["stanzas"]}
            _packages_memo[key] = found
            return found
    progress("reading the kernel lists")
    out = run(["apt-get", *apt_options(), "indextargets", "--format", "$(FILENAME) $(RELEASE)",
               "Identifier: Packages"], "apt-get indextargets")
    order = [s for s, _ in SUITES]
    targets = sorted((line.split(" ", 1) for line in out.splitlines() if " " in line),
                     key=lambda t: order.index(t[1]) if t[1] in order else len(order))
    found: dict[tuple[str, str], dict[str, str]] = {}
    for filename, suite in targets:
        if not os.path.exists(filename):
            continue
        text = run(["/usr/lib/apt/apt-helper", "cat-file", filename], "apt-helper cat-file")
        for stanza in text.split("\n\n"):
            if not stanza.startswith("Package: linux-") or not _WANTED.match(stanza[9:]):
                continue
            fields: dict[str, str] = {"Suite": suite}
            for ln in stanza.splitlines():
                k, sep, v = ln.partition(": ")
                if sep and k in _FIELDS:
                    fields[k] = v
            found.setdefault((fields.get("Package", ""), fields.get("Version", "")), fields)
    _packages_memo.clear()
    _packages_memo[key] = found
    if key[1]:
        tmp = index.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stamp": key[1], "wanted": _WANTED.pattern,
                                   "stanzas": list(found.values())}))
        os.replace(tmp, index)
    return found


def _deb(fields: dict[str, str]) -> Deb:
    return Deb(fields["Package"], fields["Version"], int(fields.get("Size", "0")),
               fields.get("SHA256", ""))


def _parts(image: dict[str, str], pkgs: dict[tuple[str, str], dict[str, str]]) -> list[Deb]:
    """The image package and, since 7.x splits it, the exact-version parts it depends on."""
    debs = [_deb(image)]
    for dep in re.findall(r"(linux-(?:binary|modules|base)-\S+) \(= ([^)]+)\)",
                          image.get("Depends", "")):
        if dep in pkgs:
            debs.append(_deb(pkgs[dep]))
    return debs


def _family(abi: str) -> int:
    """Which Debian release a build is for (12 for 6.1.0-N and +deb12*), for preferring
    Debian 12's build of a release that several releases carry; 99 when unsaid."""
    m = re.search(r"\+deb(\d+)", abi)
    if m:
        return int(m[1])
    return 12 if re.fullmatch(r"\d+\.\d+\.0-\d+", abi) else 99


def build_key(version: str, abi: str, package_version: str) -> tuple:
    """Order of builds: by release, then Debian 12's build before later releases' builds,
    then the newer package."""
    return (kn.version_key(version), _family(abi), kn.debian_version_key(package_version))


def preference(abi: str, package_version: str) -> tuple:
    """Among builds of one release, the preferred sorts first (Debian 12's, then newest)."""
    key = kn.debian_version_key(package_version)
    return (_family(abi), _negate(key))


def _negate(key: object) -> object:
    if isinstance(key, int):
        return -key
    if isinstance(key, tuple):
        return tuple(_negate(k) for k in key)
    return key


def available(refresh: bool = False, progress: Progress = _quiet,
              cached: set[tuple[str, str]] | None = None,
              offline: bool = False) -> list[Available]:
    """Every linux-image-*-amd64 build the mirror serves, oldest first (build_key order).

    cached: (package, package_version) pairs in the kernel cache; by default read from it.
    offline: use the lists as they are, however old (none: an empty catalogue), never the
    network (for checking names while loading a file).
    """
    if not offline:
        update(refresh, progress)
    elif lists_age() is None:
        return []
    pkgs = packages(progress)
    if cached is None:
        from labkit.hosts.vm import kernelcache

        cached = {(k.package, k.package_version) for k in kernelcache.list_cached()}
    builds: list[tuple[str, str, dict[str, str]]] = []  # (version, abi, fields)
    for (name, version), fields in pkgs.items():
        m = _IMAGE_RE.fullmatch(name)
        if not m or "linux-image-" in fields.get("Depends", ""):
            continue  # not a kernel, or a meta package that only points at the newest
        builds.append((kn.upstream_of(version), m["abi"], fields))
    by_release: dict[str, list[tuple[str, str, dict[str, str]]]] = {}
    for b in builds:
        by_release.setdefault(b[0], []).append(b)
    out = []
    for release, group in by_release.items():
        group.sort(key=lambda b: preference(b[1], b[2]["Version"]))
        for i, (version, abi, fields) in enumerate(group):
            debs = _parts(fields, pkgs)
            name = kn.PREFIX + (version if i == 0 else _exact(version, abi))
            out.append(Available(
                name=name, version=release, series=kn.series_of(release),
                suite=fields["Suite"], package=fields["Package"],
                package_version=fields["Version"], size=sum(d.size for d in debs),
                cached=(fields["Package"], fields["Version"]) in cached, abi=abi,
                headers=(f"linux-headers-{abi}-amd64", fields["Version"]) in pkgs,
                debs=tuple(debs)))
    out.sort(key=lambda a: build_key(a.version, a.abi, a.package_version))
    return out


def _exact(version: str, abi: str) -> str:
    """The name of a build that is not its release's preferred one: 6.12.90+deb12,
    6.1.0-56 (two 6.1 ABIs can hold one release)."""
    if "+" in abi:
        return version + "+" + abi.split("+", 1)[1]
    return abi


# -- downloading ---------------------------------------------------------------------------


def deb(package: str, version: str | None = None) -> Deb:
    """A linux-* package of the lists (image, binary, modules, base, headers, kbuild,
    source): that version, or the newest. Reads the lists as they are (see update())."""
    pkgs = packages()
    found = [f for (name, v), f in pkgs.items() if name == package and version in (None, v)]
    if not found:
        raise LabkitError(
            f"labkit's kernel lists have no {package}" + (f" {version}." if version else "."),
            hint="Refresh them with `sudo labkit vm kernels list --available --refresh`; "
            "see what there is with `labkit vm kernels list --available`.")
    return _deb(max(found, key=lambda f: kn.debian_version_key(f["Version"])))


def download(deb: Deb, progress: Progress = _quiet,
             on_bytes: Callable[[int], None] | None = None) -> Path:
    """The .deb in the downloads cache (paths.downloads_dir()): reused when a complete copy
    is there (checked by SHA256), else downloaded by apt, through labkit's lists, into a
    temporary directory and renamed, so an interrupted download leaves no .deb.
    on_bytes(n) reports the bytes of this download so far."""
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    return _reuse(deb, downloads, progress) or _download_one(deb, downloads, progress, on_bytes)


def _reuse(deb: Deb, downloads: Path, progress: Progress) -> Path | None:
    """A complete copy (size and SHA256 as the lists say) already in the downloads cache."""
    for candidate in sorted(downloads.glob(f"{deb.package}_*.deb")):
        if candidate.stat().st_size == deb.size:
            if sha256(candidate) == deb.sha256:
                progress(f"reusing {candidate.name}")
                return candidate
    return None


def _download_one(deb: Deb, downloads: Path, progress: Progress,
                  on_bytes: Callable[[int], None] | None) -> Path:
    if len(deb.sha256) != 64:
        raise LabkitError(f"The lists name no SHA256 for {deb.package} {deb.version}.",
                          hint="Refresh them: `sudo labkit vm kernels list --available "
                          "--refresh`.")
    progress(f"downloading {deb.package} ({deb.size / 1e6:.0f} MB)")
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=downloads) as tmp:
        os.chmod(tmp, 0o755)  # lets apt's _apt user write, avoiding its sandbox warning
        run(["apt-get", *apt_options(), "download",
             f"{deb.package}={deb.version}"], "apt-get download", cwd=tmp,
            watch=(lambda: on_bytes(_bytes_in(tmp))) if on_bytes else None)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1 or sha256(debs[0]) != deb.sha256:
            raise LabkitError(
                f"The download of {deb.package} is incomplete or does not match the "
                "lists' SHA256.",
                hint="Refresh the lists (`sudo labkit vm kernels list --available "
                "--refresh`) and fetch again.",
            )
        final = downloads / debs[0].name
        os.replace(debs[0], final)
    return final


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bytes_in(directory: str) -> int:
    """Bytes written so far under a directory (apt's partial download included)."""
    total = 0
    for root, _, files in os.walk(directory):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_size
    return total


# -- running apt -------------------------------------------------------------------------


def run(argv: list[str], what: str, cwd: str | None = None,
        watch: Callable[[], None] | None = None,
        on_line: Callable[[str], None] | None = None) -> str:
    """Run a tool to completion; `watch` is called a few times a second meanwhile, and
    `on_line` with each line of its output as it comes (for progress)."""
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    if shutil.which(argv[0]) is None and Path("/sbin", argv[0]).exists():
        argv = [f"/sbin/{argv[0]}", *argv[1:]]
    if on_line is not None:
        return _run_lines(argv, what, cwd, env, on_line)
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
    if proc.returncode != 0:
        _failed(what, proc.returncode, err or out)
    return out


def _run_lines(argv: list[str], what: str, cwd: str | None, env: dict[str, str],
               on_line: Callable[[str], None]) -> str:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, env=env)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            on_line(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        _failed(what, proc.returncode, "".join(lines))
    return "".join(lines)


def _failed(what: str, code: int, text: str) -> None:
    detail = text.strip().splitlines()[-3:]
    raise LabkitError(
        f"{what} failed (exit status {code}): {' / '.join(detail)}",
        hint="Fetching kernels needs root and network access to the Debian mirror named in "
        "the machine's apt sources.",
    )
