"""`labkit vm ...`: run commands, labs and tests on another kernel, inside a VM.

Thin layer over labkit.hosts.vms and .kernels: parse, check root, print. Commands run in the VM keep
their own exit status as labkit's exit status, so `labkit vm run -- CMD` can stand in
for CMD in scripts and CI.
"""

from __future__ import annotations

import sys
import time

import typer

from labkit.cli.output import columns, console, emit_json, err_console, info, require_root
from labkit.hosts import kernels
from labkit.hosts.kernels import DEFAULT_KERNEL

app = typer.Typer(
    help=(
        "Run commands, labs and tests on another kernel, in a VM (virtme-ng + qemu).\n\n"
        "The host's filesystem is shared read-only (the current directory and the venv "
        "work as-is; /tmp, /run and root's home are writable in the guest). Start with "
        "`sudo labkit vm kernels fetch debian-6.12`, then `sudo labkit vm run -- uname -r`."
    ),
    no_args_is_help=True,
)
kernels_app = typer.Typer(
    help="Guest kernels: list what the Debian mirror serves, fetch any build, list the cache.",
    no_args_is_help=True
)
app.add_typer(kernels_app, name="kernels")

# Options may come before `--`; what follows `--` is CMD, untouched.
CMD_SETTINGS = {"ignore_unknown_options": True}
KERNEL_OPT = typer.Option(
    DEFAULT_KERNEL, "--kernel", "-k",
    help="A kernel name (debian-6.12, 6.12.69, debian-7.2, built:NAME; see `labkit vm "
    "kernels fetch --help`), a bzImage, or a kernel build tree (with its modules).",
)
MEMORY_OPT = typer.Option(None, "--memory", "-m", help="Guest memory, e.g. 2G (default 1G).")
CPUS_OPT = typer.Option(
    None, "--cpus", "-p", help="Guest CPUs (default: as many as the host under KVM; 1 under "
    "TCG emulation, where a second vCPU spins while the host runs something else).")
RWDIR_OPT = typer.Option(
    [], "--rwdir", help="Host directory the guest may write to (repeatable; writes reach the host)."
)
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document (output is captured).")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="vm")


def _command(cmd: list[str]) -> list[str]:
    """click keeps a `--` that follows a positional argument; it is not part of CMD."""
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        from labkit.errors import UsageError

        raise UsageError("No command given.", hint="Put it after `--`, e.g. `-- uname -r`.")
    return cmd


def _stdin_is_data() -> bool:
    """Forward stdin when it is a pipe or file; a terminal would need a pty (not offered)."""
    try:
        return not sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


# -- kernels -----------------------------------------------------------------------------


KERNEL_NAMES = (
    "Kernel names: a series means its newest build (debian-6.12, debian-6.1, debian-7.2, "
    "debian-7.3-rc); a release (6.12.69, debian-6.12.69, 7.3-rc7) or an exact build "
    "(6.12.90+deb12.1, debian-6.12.117+deb13, debian-6.1.0-56) names one build; "
    "built:NAME is a kernel built with `labkit kernel build`."
)


@kernels_app.command("fetch", help=(
    "Download a Debian kernel build, unpack it and index its modules.\n\n"
    + KERNEL_NAMES + " Each build is cached side by side (debian-6.12.69, ...); the "
    "packages come from labkit's own apt lists (see `list --available`), never /etc/apt's."))
def kernels_fetch(
    name: str = typer.Argument(DEFAULT_KERNEL, metavar="VERSION|SERIES",
                               help="e.g. debian-6.12, 6.12.69, debian-7.2, debian-7.3-rc."),
    force: bool = typer.Option(False, "--force", help="Unpack again even if cached."),
    refresh: bool = typer.Option(False, "--refresh",
                                 help="Refresh the kernel lists first (else: once a day)."),
    json_out: bool = JSON_OPT,
) -> None:
    from labkit.cli.output import progress

    require_root()
    with progress(f"fetch {name}") as bar:
        kernel = kernels.fetch(
            name, progress=lambda msg: info(f"{name}: {msg}"), force=force, refresh=refresh,
            on_bytes=lambda done, total: bar(done // 1_000_000, total // 1_000_000,
                                             "downloading (MB)"))
    if json_out:
        emit_json(kernel.to_json())
    else:
        console.print(f"{kernel.name}: {kernel.version} ({kernel.image})", soft_wrap=True)


@kernels_app.command("list")
def kernels_list(
    available: bool = typer.Option(
        False, "--available", "-a",
        help="Every kernel build the Debian mirror serves (labkit's own lists, refreshed "
        "once a day), with its suite and size, marking the cached ones."),
    refresh: bool = typer.Option(False, "--refresh", help="With --available: refresh the "
                                 "lists now (needs root)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Kernels in the cache, usable as `--kernel NAME`; with --available, every kernel the
    mirror serves (fetch one with `labkit vm kernels fetch NAME`)."""
    if available:
        _list_available(refresh, json_out)
        return
    cached = kernels.list_cached()
    if json_out:
        emit_json([k.to_json() for k in cached])
        return
    if not cached:
        console.print(
            "No kernels cached. Fetch one with `sudo labkit vm kernels fetch debian-6.12`."
        )
        return
    columns(
        ("NAME", "VERSION", "PACKAGE", "FETCHED", "IMAGE"),
        [(k.name, k.version, k.package_version or "-", k.fetched_at or "-", k.image)
         for k in cached],
    )


def _list_available(refresh: bool, json_out: bool) -> None:
    import os


    if os.geteuid() != 0 and (refresh or kernels.needs_update()):
        require_root()  # the lists live under labkit's state directory
    items = kernels.available(refresh=refresh, progress=info)
    if json_out:
        emit_json([a.to_json() for a in items])
        return
    columns(
        ("NAME", "SERIES", "SUITE", "PACKAGE VERSION", "SIZE", "HEADERS", "CACHED"),
        [(a.name, a.series, a.suite, a.package_version, f"{a.size / 1e6:.0f} MB",
          "yes" if a.headers else "-", "yes" if a.cached else "-") for a in items],
    )
    age = kernels.lists_age() or 0.0
    info(f"{len(items)} builds; lists {age / 3600:.1f} h old (`--refresh` to update). "
         "Fetch one with `sudo labkit vm kernels fetch NAME`; a series name "
         "(e.g. debian-6.12) means its newest. HEADERS: the mirror still serves its headers, "
         "so scripts/build_kmod.sh can build the offload NIC's module for it.")


# -- one-shot ----------------------------------------------------------------------------


@app.command("run", context_settings=CMD_SETTINGS)
def run_cmd(
    cmd: list[str] = typer.Argument(..., metavar="-- CMD...", help="The command to run as root."),
    kernel: str = KERNEL_OPT,
    memory: str | None = MEMORY_OPT,
    cpus: int | None = CPUS_OPT,
    rwdir: list[str] = RWDIR_OPT,
    append: list[str] = typer.Option(
        [], "--append", "-a", help="Extra kernel command-line option, e.g. init_on_alloc=0 "
        "(repeatable)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Boot a VM, run CMD as root in the current directory, power off; exit with CMD's status."""
    from labkit.hosts.vms import run

    require_root()
    argv = _command(cmd)
    if json_out:
        started = time.monotonic()
        result = run(argv, kernel, capture=True, memory=memory, cpus=cpus, rwdirs=rwdir,
                     append=append)
        emit_json({**result.to_json(), "seconds": round(time.monotonic() - started, 2)})
        raise typer.Exit(result.code)
    code = run(
        argv, kernel, memory=memory, cpus=cpus, rwdirs=rwdir, forward_stdin=_stdin_is_data(),
        append=append,
    )
    raise typer.Exit(code)


# -- persistent --------------------------------------------------------------------------


@app.command("start")
def start_cmd(
    name: str = typer.Argument("default", help="Name of the VM."),
    kernel: str = KERNEL_OPT,
    memory: str | None = MEMORY_OPT,
    cpus: int | None = CPUS_OPT,
    forward: list[str] = typer.Option(
        [], "--forward", "-f", help="HOSTPORT:GUESTPORT, TCP on 127.0.0.1 (repeatable)."
    ),
    rwdir: list[str] = RWDIR_OPT,
    overlay: list[str] = typer.Option(
        [], "--overlay", help="Host directory made writable in the guest only (repeatable)."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Boot a VM that stays up in the background; use it with `labkit vm exec NAME -- CMD`."""
    from labkit.hosts import vms

    require_root()
    if not json_out:
        info(f"Starting VM {name} ({kernel})...")
    started = time.monotonic()
    vm = vms.start(
        name, kernel, memory=memory, cpus=cpus, forwards=forward, rwdirs=rwdir, overlays=overlay
    )
    if json_out:
        emit_json(vm.to_json())
        return
    fwd = f", forwarding {', '.join(vm.forwards)}" if vm.forwards else ""
    console.print(
        f"VM {vm.name} is running: {vm.kernel_version} under {vm.accel.upper()}{fwd} "
        f"(up in {time.monotonic() - started:.1f} s). "
        f"Run commands with `labkit vm exec {vm.name} -- CMD`.",
        soft_wrap=True,
    )


@app.command("exec", context_settings=CMD_SETTINGS)
def exec_cmd(
    name: str = typer.Argument(..., help="Name of a running VM."),
    cmd: list[str] = typer.Argument(..., metavar="-- CMD...", help="The command to run as root."),
    tty: bool = typer.Option(False, "--tty", "-t", help="Run CMD on a pseudo-terminal, "
                             "driven from this terminal (a shell: `-t -- bash`)."),
    json_out: bool = JSON_OPT,
) -> None:
    """Run CMD as root in a running VM, in the current directory; exit with CMD's status."""
    from labkit.hosts import vms

    require_root()
    argv = _command(cmd)
    if tty:
        raise typer.Exit(vms.exec_pty(name, argv))
    if json_out:
        result = vms.exec_(name, argv, capture=True)
        emit_json(result.to_json())
        raise typer.Exit(result.code)
    raise typer.Exit(vms.exec_(name, argv, forward_stdin=_stdin_is_data()))


@app.command("stop")
def stop_cmd(name: str = typer.Argument("default", help="Name of the VM.")) -> None:
    """Stop a VM (running, booting or crashed): kill its qemu and remove its state."""
    from labkit.hosts import vms

    require_root()
    vm = vms.stop(name)
    note = f" (it had {vm.status}: {vm.reason})" if vm.status not in ("running", "booting") else ""
    console.print(f"VM {name} stopped{note}.", soft_wrap=True)


@app.command("list")
def list_cmd(json_out: bool = JSON_OPT) -> None:
    """Persistent VMs and their status (running, booting, crashed, failed)."""
    from labkit.hosts import vms

    vms = vms.list_vms()
    if json_out:
        emit_json([vm.to_json() for vm in vms])
        return
    if not vms:
        console.print("No VMs. Start one with `sudo labkit vm start [NAME]`.")
        return
    rows = []
    for vm in vms:
        running = vm.started_at and vm.status == "running"
        up = f"{time.time() - vm.started_at:.0f}s" if running and vm.started_at else "-"
        rows.append((
            vm.name, vm.status, vm.kernel_version or vm.kernel, vm.accel, vm.memory,
            ",".join(vm.forwards) or "-", up,
        ))
    columns(("NAME", "STATUS", "KERNEL", "ACCEL", "MEMORY", "FORWARDS", "UPTIME"), rows)
    for vm in vms:
        if vm.status in ("crashed", "failed") and vm.reason:
            first = vm.reason.splitlines()[0]
            err_console.print(
                f"{vm.name}: {first} (clean up with `labkit vm stop {vm.name}`)", soft_wrap=True
            )


@app.command("accel")
def accel_cmd(
    kernel: str = KERNEL_OPT,
    reprobe: bool = typer.Option(
        False, "--reprobe", help="Ignore the cached verdict, probe again."
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Whether VMs here use KVM or TCG emulation, and why (probes KVM once, then caches)."""
    from labkit.hosts import vms

    accel = vms.accel(kernels.resolve(kernel).image, reprobe=reprobe)
    if json_out:
        emit_json(accel.to_json())
    else:
        cached = " (cached verdict)" if accel.cached else ""
        console.print(f"{accel.kind.upper()}: {accel.reason}{cached}", soft_wrap=True)
