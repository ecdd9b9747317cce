"""`labkit repro bisect`: the bisection (labkit.repro.bisect) driven by real runs.

Each build tested is fetched when the bisection first needs it and gets one VM boot per
try (labkit.repro.runner.Session, the same runs `repro run` makes); every run lands in
one bundle whose verdict.json carries the bisection's answer.
"""

from __future__ import annotations

from collections.abc import Callable

from labkit.errors import LabkitError, UsageError
from labkit.repro import bisect, kernelsource
from labkit.repro.model import COULD_NOT_RUN, KernelPlan, Scenario
from labkit.repro.runner import Report, Session

Say = Callable[[str], None]


def run(scenario: Scenario, first: str, last: str, out_dir: str, *, retries: int = 0,
        include_keys: bool = False, say: Say = lambda text: None,
        argv: list[str] | None = None) -> tuple[bisect.Result, Report]:
    """Bisect the scenario over the available builds from first to last."""
    if retries < 0:
        raise UsageError(f"--retries {retries}: must be 0 or more.",
                         hint="--retries 2 runs each build three times (flaky detection).")
    say(f"listing the builds from {first} to {last}")
    builds = kernelsource.between(first, last, say)
    if len(builds) < 2:
        raise UsageError(f"{first} .. {last} holds one build ({builds[0]}): nothing to bisect.",
                         hint="Give two different kernels, the older with --from.")
    say(f"bisecting {len(builds)} builds: {', '.join(builds)} "
        f"(at most {bisect.boot_budget(len(builds)) * (retries + 1)} boots)")
    session = Session(scenario, out_dir, include_keys=include_keys, say=say, argv=argv)

    def test(name: str) -> list[str]:
        try:
            kernelsource.ensure(name, say)  # booted by its own name: the table shows it
        except LabkitError as exc:
            say(f"{name}: could not fetch: {exc.render()}")
            return [COULD_NOT_RUN]
        verdicts = []
        for t in range(retries + 1):
            say(f"{name}: booting" + (f" (try {t + 1} of {retries + 1})" if retries else ""))
            plan = KernelPlan(name=name, options=scenario.kernel_options)
            verdicts.append(session.kernel(plan, subdir=f"try-{t + 1}" if t else "").result)
        return verdicts

    result = bisect.Result(builds=builds)
    try:
        result = bisect.bisect(builds, test, say=say)
    finally:
        report = session.close({"bisect": result.to_json()})
    return result, report


def exit_code(result: bisect.Result) -> int:
    """0 a pair named; 1 no clean answer (a flaky build, or only skipped builds between);
    2 nothing to bisect (same verdict at both ends, or an end could not be judged)."""
    if result.status == bisect.FOUND:
        return 0
    if result.status in (bisect.FLAKY_STOP, bisect.SKIPPED_RANGE):
        return 1
    return 2
