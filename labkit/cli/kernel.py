"""`labkit kernel build`: build a small VM kernel from source, with your patches.

Thin layer over labkit.hosts.kernels.build: parse, check root, show progress, print.
"""

from __future__ import annotations

from pathlib import Path

import typer

from labkit.cli.output import console, emit_json, err_console, info, progress, require_root

app = typer.Typer(
    help=(
        "Kernels built from source for labkit's VMs.\n\n"
        "`labkit kernel build --source 7.2 --patch fix.patch` builds Debian's linux-source "
        "7.2 with the patch into a small kernel (a minimal VM configuration plus every "
        "option labkit's features need, all built in) and caches it as `built:NAME`: boot "
        "it with `labkit vm run --kernel built:NAME -- uname -r` or run a lab on it with "
        "`labkit run topologies/cluster.yaml --vm built:NAME`."
    ),
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="kernel")


@app.command("build")
def build_cmd(
    source: str = typer.Option(
        ..., "--source", "-s",
        help="7.2, 6.12 or 7.3 (Debian's linux-source-X, downloaded and unpacked once), "
        "or the path of your own Linux tree (built out of tree: it stays clean)."),
    patch: list[Path] = typer.Option(
        [], "--patch", "-P",
        help="A unified diff (-p1, as git format-patch makes) to apply; repeatable, in "
        "order. Checked before anything is touched."),
    config: list[Path] = typer.Option(
        [], "--config", "-c",
        help="A config fragment (CONFIG_X=y lines) merged after labkit's; repeatable."),
    name: str = typer.Option(
        None, "--name", "-n",
        help="Cache the kernel as built:NAME (default: SOURCE-HASH of the inputs)."),
    jobs: int = typer.Option(None, "--jobs", "-j", min=1,
                             help="Parallel compile jobs (default: the host's CPUs)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Build a kernel (or reuse the identical one already built) and cache it as built:NAME.

    The same source, patches and fragments give the same kernel: asking again takes
    seconds. Another patch on the same source and configuration recompiles only what it
    changes. The build is niced; its log is kept and its path printed. Needs root (the
    cache is /var/lib/labkit/kernels) and about 1-3 GB free under /var/cache/labkit.

    \b
    $ sudo labkit kernel build --source 7.2
    $ sudo labkit kernel build --source 7.2 --patch fix.patch --name fixed
    $ sudo labkit vm run --kernel built:fixed -- uname -r
    """
    from labkit.hosts import kernels

    require_root()
    shown = [-1]

    def plain(done: int, total: int) -> None:
        pct = min(100, done * 100 // max(total, 1))
        if pct // 10 != shown[0]:
            shown[0] = pct // 10
            info(f"kernel build: compiling {pct}% ({done}/{total} steps)")

    try:
        with progress("compiling") as bar:
            on_percent = (lambda d, t: bar(d, t, "steps")) if err_console.is_terminal \
                else plain
            result = kernels.build(source, patch, config, name=name, jobs=jobs,
                                 progress=lambda msg: info(f"kernel build: {msg}"),
                                 on_percent=on_percent)
    except KeyboardInterrupt:
        info("kernel build: interrupted; nothing was added to the kernel cache (the object "
             "tree is kept, so the next build resumes where this one stopped)")
        raise
    if json_out:
        emit_json(result.to_json())
        return
    k = result.kernel
    what = "up to date" if result.cached else f"built in {result.seconds:.0f} s"
    console.print(f"{k.name}: {k.version}, {what} ({k.image})", soft_wrap=True)
    if result.log:
        console.print(f"log: {result.log}", soft_wrap=True)
    console.print(f"use it: labkit vm run --kernel {k.name} -- uname -r", soft_wrap=True)
