"""How the CLI talks: rich text at a terminal, plain lines in pipes, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


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
