"""`labkit doctor`: what a kernel can do, and where each lab feature will run."""

from __future__ import annotations

import os
import sys

import typer

from labkit.cli.output import console, emit_json, info


def _show(kernel: str, source: str, results: dict, features: dict) -> None:
    console.print(f"kernel {kernel} ({source})", soft_wrap=True)
    for key, probe in results.items():
        mark = "[green]yes[/]" if probe.ok else "[red]no [/]"
        console.print(f"  {mark} {key:12} {probe.detail}", soft_wrap=True)
    console.print("lab features:")
    for feature, data in features.items():
        where = "[green]runs here[/]" if data["runs"] else "[yellow]cannot run here[/]"
        missing = f"  (missing: {', '.join(data['missing'])})" if data["missing"] else ""
        console.print(f"  {feature:12} {where}  {data['title']}{missing}", soft_wrap=True)


def _probe_kernel(name: str) -> tuple[dict, str]:
    """Probe a cached kernel for real, in a one-shot VM, and remember the answer."""
    import json

    from labkit import capabilities as d
    from labkit.hosts import kernels
    from labkit.hosts.vms import run as vm_run
    from labkit.lab.placement import kernel_probes

    k = kernels.resolve(name)
    info(f"probing {name} ({k.version}) in a VM...")
    res = vm_run([sys.executable, "-m", "labkit.capabilities", "--json"], kernel=name,
                 capture=True)
    if res.code != 0:
        from labkit.errors import LabkitError

        raise LabkitError(f"the doctor failed inside the {name} VM: "
                          f"{res.err.strip().splitlines()[-1:] or ['no output']}.")
    data = json.loads(res.out.strip().splitlines()[-1])
    probes = {n: d.Probe(n, bool(v["ok"]), str(v["detail"])) for n, v in data["probes"].items()}
    if k.source == "cache":
        d.save_report(os.path.dirname(os.path.dirname(k.image)), data["release"], probes)
    known = kernel_probes(name)
    return (known[0] if known else probes), "probed in a VM"


def doctor(
    kernel: str = typer.Option(None, "--kernel", "-k", metavar="KERNEL",
                               help="Probe this cached VM kernel (boots it once; the answer "
                               "is remembered for placement)."),
    all_kernels: bool = typer.Option(False, "--all-kernels",
                                     help="A matrix: lab features x this kernel and every "
                                     "cached VM kernel."),
    refresh: bool = typer.Option(False, "--refresh", help="With --all-kernels: probe every "
                                 "cached kernel in a VM again instead of reusing answers."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Probe a kernel (netns, veth, bridge, tun, netem, BPF sockmap, kTLS and every lab
    feature's own capabilities) and say which lab features it can run.

    Without options: this machine's kernel, probed live in a scratch namespace that is
    removed at once. A lab that needs what this kernel lacks is placed in a VM by
    `labkit up`; `--all-kernels` shows which kernel would take it.
    """
    from labkit.capabilities import differences, lab_features, probe_all
    from labkit.hosts import kernels
    from labkit.lab.placement import kernel_probes

    if kernel and all_kernels:
        from labkit.errors import UsageError

        raise UsageError("--kernel and --all-kernels exclude each other.")
    if not all_kernels:
        if kernel:
            results, source = _probe_kernel(kernel)
            release = kernels.resolve(kernel).version
        else:
            results, source, release = probe_all(), "this machine, probed live", \
                os.uname().release
        feats = lab_features(results)
        if json:
            emit_json({"kernel": kernel or "host", "release": release, "source": source,
                       "capabilities": {k: {"ok": v.ok, "detail": v.detail}
                                        for k, v in results.items()},
                       "features": feats})
            return
        _show(f"{kernel or 'host'} {release}", source, results, feats)
        return
    columns: dict[str, tuple[dict, str]] = {"host": (probe_all(), "probed live")}
    for k in kernels.list_cached():
        known = kernel_probes(k.name)
        if refresh or known is None or known[1] != "probed in a VM":
            columns[k.name] = _probe_kernel(k.name)
        else:
            columns[k.name] = known
    matrix = {name: lab_features(res) for name, (res, _) in columns.items()}
    diffs = differences({name: res for name, (res, _) in columns.items()})
    if json:
        emit_json({"kernels": {name: {"source": columns[name][1], "features": feats}
                               for name, feats in matrix.items()}, "differences": diffs})
        return
    names = list(matrix)
    feats = list(next(iter(matrix.values())))
    width = max(len(f) for f in feats) + 2
    console.print("".ljust(width) + "  ".join(n.ljust(12) for n in names), soft_wrap=True)
    for f in feats:
        cells = []
        for n in names:
            data = matrix[n][f]
            cells.append(("yes" if data["runs"] else "no").ljust(12))
        console.print(f.ljust(width) + "  ".join(cells), soft_wrap=True)
    for n in names:
        missing = {f: d["missing"] for f, d in matrix[n].items() if d["missing"]}
        if missing:
            console.print(f"{n} ({columns[n][1]}) lacks: " + "; ".join(
                f"{f}: {', '.join(m)}" for f, m in missing.items()), soft_wrap=True)
    if diffs:
        console.print("where these kernels differ:")
    for line in diffs:
        console.print(f"  {line}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
