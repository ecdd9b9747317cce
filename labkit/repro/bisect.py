"""Which release changed it: halve the builds between two kernels until two adjacent ones
differ.

The algorithm knows nothing of VMs: `test(kernel)` returns one verdict per try (the CLI
runs the scenario once per try, one VM boot each). Both ends are tested first; if they
agree there is nothing to find. Then the usual bisection: a middle build with the first
end's verdict moves the low end up, one with the last end's verdict moves the high end
down. A build whose tries disagree is *flaky*: the bisection stops there and names it
rather than guess a side. A build that could not run is skipped (like `git bisect skip`):
the next untested build nearest the middle is tried instead, and if none is left the
answer is a range with the skipped builds inside it. Without retries or skips that is at
most 2 + ceil(log2(N - 1)) boots for N builds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit.repro.model import COULD_NOT_RUN, NOT_REPRODUCED, REPRODUCED

FLAKY = "flaky"
# Outcomes of a bisection (what `status` says).
FOUND, SAME_ENDS, END_UNUSABLE, FLAKY_STOP, SKIPPED_RANGE = (
    "found", "same verdict at both ends", "an end could not be judged", "flaky build",
    "only skipped builds between")

Say = Callable[[str], None]


@dataclass
class Probe:
    """One build tested: its verdict on each try and the time it took."""

    kernel: str
    verdicts: list[str]
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        """The build's verdict: the tries' common one; flaky when two judged tries differ;
        could not run when no try was judged."""
        judged = {v for v in self.verdicts if v in (REPRODUCED, NOT_REPRODUCED)}
        if len(judged) > 1:
            return FLAKY
        return judged.pop() if judged else COULD_NOT_RUN

    @property
    def boots(self) -> int:
        return len(self.verdicts)

    def to_json(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "verdict": self.verdict, "tries": self.verdicts,
                "seconds": round(self.seconds, 1)}


@dataclass
class Result:
    builds: list[str]
    status: str = FOUND
    last_before: str = ""  # the last build with the first end's verdict
    first_after: str = ""  # the first build with the other verdict
    before: str = ""  # the verdict at the first end
    after: str = ""  # the verdict at the last end
    flaky: str = ""  # the build whose tries disagreed, if the bisection stopped there
    skipped: list[str] = field(default_factory=list)  # builds that could not run
    probes: list[Probe] = field(default_factory=list)  # in the order they were tested
    seconds: float = 0.0

    @property
    def boots(self) -> int:
        return sum(p.boots for p in self.probes)

    @property
    def found(self) -> bool:
        return self.status == FOUND

    def sentence(self) -> str:
        """The answer in one line, for the terminal and the report."""
        if self.status == FOUND:
            return (f"{self.before} up to {self.last_before}, {self.after} from "
                    f"{self.first_after} on (adjacent builds)")
        if self.status == SKIPPED_RANGE:
            return (f"{self.before} up to {self.last_before}, {self.after} from "
                    f"{self.first_after} on; between them only builds that could not run: "
                    f"{', '.join(self.skipped)}")
        if self.status == FLAKY_STOP:
            where = (f" (narrowed to {self.last_before} .. {self.first_after})"
                     if self.last_before else "")
            return (f"{self.flaky} is flaky: its tries gave "
                    f"{' / '.join(self.probe(self.flaky).verdicts)}; the bisection "
                    f"stopped there{where}")
        if self.status == SAME_ENDS:
            return (f"both ends are {self.before} ({self.builds[0]}, {self.builds[-1]}): "
                    "nothing changed between them that this scenario sees")
        bad = [p for p in self.probes if p.verdict in (COULD_NOT_RUN, FLAKY)]
        return "; ".join(f"{p.kernel} {p.verdict}" + (
            f" ({' / '.join(p.verdicts)})" if p.verdict == FLAKY else "") for p in bad)

    def probe(self, kernel: str) -> Probe:
        return next(p for p in self.probes if p.kernel == kernel)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "found": self.found, "answer": self.sentence(),
                "last_before": self.last_before, "first_after": self.first_after,
                "before": self.before, "after": self.after, "flaky": self.flaky,
                "skipped": self.skipped, "builds": self.builds, "boots": self.boots,
                "boot_budget": boot_budget(len(self.builds)),
                "seconds": round(self.seconds, 1),
                "probes": [p.to_json() for p in self.probes]}


def boot_budget(n: int) -> int:
    """Boots a bisection of n builds takes at most without retries or skips."""
    return n if n <= 2 else 2 + math.ceil(math.log2(n - 1))


def bisect(builds: list[str], test: Callable[[str], list[str]], *,
           say: Say = lambda text: None, clock: Callable[[], float] = time.monotonic) -> Result:
    """Bisect builds (in version order, at least two) with test(kernel) -> verdict per try."""
    if len(builds) < 2:
        raise ValueError("a bisection needs at least two builds")
    start = clock()
    res = Result(builds=list(builds))

    def probe(i: int, role: str) -> Probe:
        say(f"[{i + 1}/{len(builds)}] {builds[i]}: testing ({role})")
        t0 = clock()
        p = Probe(builds[i], list(test(builds[i])), 0.0)
        p.seconds = clock() - t0
        res.probes.append(p)
        say(f"[{i + 1}/{len(builds)}] {builds[i]}: {p.verdict}"
            + (f" ({' / '.join(p.verdicts)})" if p.boots > 1 else "")
            + f" [{p.seconds:.0f} s]")
        return p

    try:
        first = probe(0, "first end")
        if first.verdict in (COULD_NOT_RUN, FLAKY):
            res.status = END_UNUSABLE if first.verdict == COULD_NOT_RUN else FLAKY_STOP
            res.flaky = first.kernel if first.verdict == FLAKY else ""
            return res
        last = probe(len(builds) - 1, "last end")
        res.before, res.after = first.verdict, last.verdict
        if last.verdict in (COULD_NOT_RUN, FLAKY):
            res.status = END_UNUSABLE if last.verdict == COULD_NOT_RUN else FLAKY_STOP
            res.flaky = last.kernel if last.verdict == FLAKY else ""
            return res
        if first.verdict == last.verdict:
            res.status = SAME_ENDS
            return res
        lo, hi = 0, len(builds) - 1
        skipped: set[int] = set()
        while True:
            untested = [i for i in range(lo + 1, hi) if i not in skipped]
            if not untested:
                break
            mid = (lo + hi) // 2
            i = min(untested, key=lambda j: (abs(j - mid), j))
            p = probe(i, f"between {builds[lo]} and {builds[hi]}")
            if p.verdict == res.before:
                lo = i
            elif p.verdict == res.after:
                hi = i
            elif p.verdict == FLAKY:
                res.status, res.flaky = FLAKY_STOP, p.kernel
                res.last_before, res.first_after = builds[lo], builds[hi]
                return res
            else:
                skipped.add(i)
                say(f"{builds[i]} could not run: skipped")
        res.last_before, res.first_after = builds[lo], builds[hi]
        res.skipped = [builds[i] for i in sorted(skipped) if lo < i < hi]
        res.status = SKIPPED_RANGE if res.skipped else FOUND
        return res
    finally:
        res.seconds = clock() - start
