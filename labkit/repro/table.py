"""The table `labkit repro run` prints (and README.txt in the bundle repeats)."""

from __future__ import annotations

from labkit.repro.results import KernelRun

HEADER = ("KERNEL", "EXPECTED", "RESULT", "AS EXPECTED", "TIME", "FIRST FAILING EXPECTATION")


def rows(runs: list[KernelRun]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    body = []
    for r in runs:
        name = r.plan.name if "/" not in r.plan.name else r.plan.label
        if r.plan.options:
            name += f" ({' '.join(r.plan.options)})"
        if r.version:
            name += f" [{r.version}]"
        body.append((name, r.plan.expect or "(no claim)", r.result,
                     "yes" if r.as_expected else "NO", f"{r.seconds:.0f} s",
                     r.first_failure or "-"))
    return HEADER, body
