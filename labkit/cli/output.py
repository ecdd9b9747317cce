"""How the CLI talks: rich text at a terminal, plain lines in pipes, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

# Whole lines in pipes and files: `| grep`, `| cut` and diffs need a value on one line.
PIPE_WIDTH = 10_000


def make_console(stderr: bool = False, force_terminal: bool | None = None) -> Console:
    """rich at a terminal (wrapped to its width); in a pipe, no wrapping, no truncation."""
    at_terminal = Console(stderr=stderr, force_terminal=force_terminal).is_terminal
    if at_terminal:
        return Console(stderr=stderr, highlight=False, emoji=False, force_terminal=force_terminal)
    return Console(stderr=stderr, highlight=False, emoji=False, soft_wrap=True,
                   width=PIPE_WIDTH)


console = make_console()
err_console = make_console(stderr=True)


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 link`, `2 links`, `0 processes`, `3 LANs`: the count and the word agreeing."""
    if count == 1:
        return f"{count} {word}"
    if many is None:
        many = word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{count} {many}"


def columns(header: tuple[str, ...], rows: list[tuple[str, ...]], *,
            out: Console | None = None) -> None:
    """Aligned plain columns, never truncated or wrapped: a table that pipes intact.

    (A rich Table shrinks columns to the console and ends names with "...".)
    """
    out = out or console
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True))
        out.print(line.rstrip(), soft_wrap=True, markup=False, highlight=False)


def emit_json(obj: Any) -> None:
    """One JSON document on stdout, nothing else, so `| jq` always works."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def info(text: str) -> None:
    err_console.print(text)


@contextmanager
def progress(description: str) -> Iterator[Any]:
    """A callback `(done, total, what)` drawn as a bar at a TTY and as lines elsewhere."""
    if err_console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[what]}"),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=None, what="")

            def update(done: int, total: int, what: str) -> None:
                bar.update(task, completed=done, total=total, what=what)

            yield update
    else:
        seen: set[str] = set()

        def update(done: int, total: int, what: str) -> None:
            # Plain logs: one line when a phase starts, not one per step.
            if what not in seen:
                seen.add(what)
                print(f"{description}: {what} ({done}/{total})", file=sys.stderr, flush=True)

        yield update


from labkit.errors import require_root  # noqa: E402,F401  (verbs import it from here)


def strip_dashes(cmd: list[str]) -> list[str]:
    """typer keeps the `--` that separates labkit's options from the command's."""
    return cmd[1:] if cmd and cmd[0] == "--" else cmd
