"""Seconds per test module from the run's JUnit files: where a test run's time goes, so the
split of modules between processes and kernel lanes can be balanced from figures.

    python scripts/module_times.py test-artifacts/junit-*.xml [--top N]
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET
from pathlib import Path


def module_seconds(path: Path) -> dict[str, float]:
    """Seconds per module (setup, call and teardown: JUnit's testcase time) in one file."""
    out: dict[str, float] = collections.defaultdict(float)
    for case in ET.parse(path).getroot().iter("testcase"):
        module = (case.get("classname") or "?").split(".")
        name = ".".join(m for m in module if not m[:1].isupper()) or "?"
        out[name] += float(case.get("time") or 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for path in args.files:
        try:
            seconds = module_seconds(path)
        except (OSError, ET.ParseError) as exc:
            print(f"== {path}: unreadable ({exc})")
            continue
        print(f"== {path.name}: {sum(seconds.values()):.0f} s in {len(seconds)} modules")
        for name, secs in sorted(seconds.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {secs:7.0f} s  {name}")


if __name__ == "__main__":
    main()
