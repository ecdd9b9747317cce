"""Finding the tools and writing the vng command line that boots a labkit VM.

What labkit adds to a plain `vng --run KERNEL --exec ...` boot:
- its own virtio-serial port (`org.labkit.ctl`) wired to a host unix socket, which carries
  commands, output and exit statuses (vng's own channel loses output and returns 255);
- the guest agent as the `--exec` script;
- overlays so the guest can write where tools expect to (root's home, the working tree)
  while the host tree stays untouched;
- optional qemu user-network port forwards.
vng joins its arguments into a shell command without quoting, so every path passed
through it is checked to be shell-safe first.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from labkit.base.busybox import static_busybox
from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm.kernels import Kernel
from labkit.hosts.vm.kvm import Accel

AGENT = str(Path(__file__).with_name("agent.py"))
PORT_NAME = "org.labkit.ctl"
FAST_TAG = "labkit.host"
FORWARD_MAC = "52:54:00:4c:4b:01"
# Guest dirs vng already overlays (writable in the guest, untouched on the host).
VNG_OVERLAYS = ("/etc", "/lib", "/home", "/opt", "/srv", "/usr", "/var", "/tmp")
_SAFE = re.compile(r"[A-Za-z0-9_./+@%:=-]+")


@dataclass(frozen=True)
class Tools:
    vng: str
    qemu: str
    busybox: str


@dataclass
class Boot:
    """Everything that decides one VM boot."""

    kernel: Kernel
    accel: Accel
    hostname: str
    serial_socket: str
    oneshot: bool
    memory: str | None = None
    cpus: int | None = None
    cwd: str = "/"
    overlays: list[str] = field(default_factory=list)
    rwdirs: list[str] = field(default_factory=list)
    forwards: list[tuple[int, int]] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)  # loaded by the agent at boot
    fast_ro: list[str] = field(default_factory=list)  # see agent.fast_mounts
    fast_rw: list[str] = field(default_factory=list)
    backplane: Backplane | None = None  # a NIC on the lab VMs' private network
    append: list[str] = field(default_factory=list)  # extra kernel command-line options
    guestd: str = ""  # a python the agent starts labkit's daemon with at boot (lab VMs)


@dataclass(frozen=True)
class Backplane:
    tap: str  # the TAP qemu creates (in the backplane namespace, where qemu runs)
    mac: str
    address: str  # the guest's address on it, with prefix length
    mtu: int


def find_tools() -> Tools:
    """Fail early, with the install command, instead of letting vng print its usage."""
    here = Path(sys.executable).parent
    vng = str(here / "vng") if (here / "vng").exists() else shutil.which("vng")
    if vng is None:
        raise LabkitError(
            "virtme-ng (`vng`) is not installed in labkit's environment.",
            hint="Install it with `.venv/bin/pip install virtme-ng`.",
        )
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise LabkitError(
            "qemu is not installed, so labkit cannot boot a VM.",
            hint="Install it with `sudo apt-get install --no-install-recommends "
            "qemu-system-x86 kmod busybox-static`.",
        )
    busybox = static_busybox()
    if busybox is None:
        raise LabkitError(
            "A statically linked busybox is needed to build the VM's initramfs (the "
            "guest kernel's 9p and virtio modules load from it).",
            hint="Install it with `sudo apt-get install busybox-static`.",
        )
    return Tools(vng=vng, qemu=qemu, busybox=busybox)


def vng_env(tools: Tools) -> dict[str, str]:
    """vng runs `virtme-run` through the shell, so its directory must be on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(tools.vng).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def shell_safe(value: str, what: str) -> str:
    if not _SAFE.fullmatch(value):
        raise UsageError(
            f"The {what} {value!r} contains characters vng cannot pass through its shell.",
            hint="Use a path made of letters, digits and ._-+/ only.",
        )
    return value


def _under(path: str, dirs: list[str] | tuple[str, ...]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def plan_dirs(cwd: str | None) -> tuple[list[str], list[str], list[str]]:
    """(vng overlays, cached read-only trees, cached writable trees) for a boot.

    Root's home is made writable (tools write ~/.cache, Jupyter its runtime files).
    Python's installation and the venv are served from the cached share. The working
    directory, when given (one-shot runs), is writable in the guest and cached; a
    persistent VM gets none, since a stale cache there would hide the user's edits.
    """
    overlays = ["/root"]
    fast_ro: list[str] = []
    for prefix in (sys.base_prefix, sys.prefix):
        real = os.path.realpath(prefix)
        if real != "/" and not _under(real, fast_ro):
            fast_ro.append(real)
    fast_rw: list[str] = []
    if cwd and cwd != "/" and not _under(cwd, ("/root", *VNG_OVERLAYS)):
        fast_rw.append(cwd)
    fast_ro = [d for d in fast_ro if not _under(d, fast_rw)]
    return overlays, fast_ro, fast_rw


def agent_command(boot: Boot) -> str:
    args = [sys.executable, "-I", "-S", AGENT]
    if boot.oneshot:
        args.append("--oneshot")
    if boot.forwards:
        args += ["--net-mac", FORWARD_MAC]
    if boot.backplane:
        bp = boot.backplane
        args += ["--bp-mac", bp.mac, "--bp-addr", bp.address, "--bp-mtu", str(bp.mtu)]
    for module in boot.modules:
        args += ["--modprobe", module]
    if boot.guestd:
        args += ["--guestd", shell_safe(boot.guestd, "python path")]
    if boot.fast_ro or boot.fast_rw:
        args += ["--fast-tag", FAST_TAG]
        for d in boot.fast_ro:
            args += ["--fast-ro", shell_safe(d, "directory")]
        for d in boot.fast_rw:
            args += ["--fast-rw", shell_safe(d, "directory")]
    return shlex.join(args)


def qemu_options(boot: Boot) -> list[str]:
    opts = [
        "-chardev", f"socket,id=lkctl,path={boot.serial_socket}",
        "-device", "virtio-serial-pci,id=lkvs",
        "-device", f"virtserialport,bus=lkvs.0,chardev=lkctl,name={PORT_NAME}",
    ]
    if boot.fast_ro or boot.fast_rw:
        opts += [
            "-fsdev", "local,id=lkhost,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", f"virtio-9p-pci,fsdev=lkhost,mount_tag={FAST_TAG}",
        ]
    if boot.forwards:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in boot.forwards)
        opts += [
            "-netdev", f"user,id=lkfwd,{fwd}",
            "-device", f"virtio-net-pci,netdev=lkfwd,mac={FORWARD_MAC}",
        ]
    if boot.backplane:
        bp = boot.backplane
        opts += [
            "-netdev", f"tap,id=lkbp,ifname={shell_safe(bp.tap, 'device')},script=no,"
            "downscript=no",
            "-device", f"virtio-net-pci,netdev=lkbp,mac={bp.mac},host_mtu={bp.mtu}",
        ]
    return opts


def vng_argv(boot: Boot, tools: Tools) -> list[str]:
    shell_safe(boot.kernel.run_arg, "kernel path")
    shell_safe(boot.serial_socket, "state directory")
    shell_safe(boot.hostname, "VM name")
    # --force-9p: vng otherwise tries virtiofsd first; when only qemu's C virtiofsd is
    # installed (Debian 12) it fails to start with vng's options and vng sleeps 3 s
    # before falling back to 9p anyway. Hot trees get the cached 9p share instead.
    argv = [
        tools.vng, "--run", boot.kernel.run_arg, "--verbose", "--force-9p",
        "--name", boot.hostname,
        "--busybox", tools.busybox, "--qemu", tools.qemu,
        "--exec", agent_command(boot),
        "--cwd", shell_safe(boot.cwd, "working directory"),
    ]
    if boot.accel.kind == "tcg":
        argv.append("--disable-kvm")
    if boot.memory:
        argv += ["--memory", shell_safe(boot.memory, "memory size")]
    if boot.cpus:
        argv += ["--cpus", str(int(boot.cpus))]
    for opt in boot.append:
        argv.append(f"--append={shell_safe(opt, 'kernel option')}")
    for d in boot.overlays:
        argv.append(f"--overlay-rwdir={shell_safe(d, 'directory')}")
    for d in boot.rwdirs:
        argv.append(f"--rwdir={shell_safe(d, 'directory')}")
    # --qemu-opts must come last: vng appends it last to virtme-run, which takes the rest.
    argv += [f"--qemu-opts={opt}" for opt in qemu_options(boot)]
    return argv
