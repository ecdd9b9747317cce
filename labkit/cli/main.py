"""Entry point: assembles the verbs and turns LabkitError into one paragraph and an exit code.

Exit codes: 0 ok, 1 failure, 2 usage or validation error (verifications: 0 pass, 1 fail,
2 could not run).
"""

from __future__ import annotations

import importlib
import inspect
import os
import signal
import sys

import typer

from labkit.errors import LabkitError

app = typer.Typer(
    name="labkit",
    help=(
        "Network-namespace testbeds for kernel networking labs.\n\n"
        "A topology file (YAML) describes nodes, links, LANs and addresses; "
        "`labkit up FILE` builds it from network namespaces, `labkit down NAME` removes "
        "every trace. Start with `labkit doctor`, then `labkit validate topologies/pair.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# One module per verb; each has register(app). Order is the order in --help: the core
# verbs, then every feature's own (from the feature registry), then the machine's.
VERBS = [
    "validate", "up", "down", "status", "exec_", "shell", "check", "run", "graph", "notebook",
    "capture", "traffic", "verify", "repro", "exercise",
]
LAST_VERBS = ["doctor", "vm", "kernel"]


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("labkit")
    except PackageNotFoundError:  # run from a checkout that was never installed
        mine = "(not installed)"
    return f"labkit {mine}, Python {sys.version.split()[0]}, kernel {os.uname().release}"


def _version(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print labkit's version (and Python's, the kernel's)."),
) -> None:
    pass


def reflow(text: str) -> str:
    """Docstring paragraphs as single lines, so help never breaks where the source did.

    rich keeps a docstring's line breaks inside a paragraph: `--help` and the verb list
    broke mid-sentence at every one. A paragraph whose later lines start with a space or a
    list mark (an example, a list) keeps its lines; everything after a \\f stays as is.
    """
    shown, cut, rest = inspect.cleandoc(text).partition("\f")
    out = []
    for para in shown.split("\n\n"):
        lines = para.splitlines()
        if para.startswith("\b") or any(line.startswith((" ", "-", "*", "$"))
                                        for line in lines[1:]):
            out.append(para)
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out) + cut + rest


def reflow_help(group: typer.Typer) -> None:
    """Reflow the help of every command and sub-group of a Typer app, recursively."""
    for cmd in group.registered_commands:
        text = cmd.help if isinstance(cmd.help, str) else inspect.getdoc(cmd.callback)
        if text:
            cmd.help = reflow(text)
    for sub in group.registered_groups:
        for holder in (sub, sub.typer_instance.info):
            if isinstance(holder.help, str):
                holder.help = reflow(holder.help)
        reflow_help(sub.typer_instance)


class BrokenVerb(LabkitError):
    """A verb module failed to import: a labkit bug, never a verb silently missing."""


def register_verbs(target: typer.Typer, verbs: list[str]) -> None:
    """verbs: names under labkit.cli, or full module paths (a feature's verbs)."""
    for verb in verbs:
        path = verb if "." in verb else f"labkit.cli.{verb}"
        try:
            module = importlib.import_module(path)
        except Exception as exc:
            raise BrokenVerb(
                f"the `{verb.rstrip('_')}` command cannot be loaded: module {path} "
                f"failed to import ({type(exc).__name__}: {exc}).",
                hint="This is a labkit bug or a broken install; run again with "
                     "LABKIT_DEBUG=1 for the traceback, or reinstall (scripts/setup.sh).",
            ) from exc
        module.register(target)
    reflow_help(target)


BROKEN: BrokenVerb | None = None
def all_verbs() -> list[str]:
    from labkit import features

    return [*VERBS, *features.cli_modules(), *LAST_VERBS]


try:
    register_verbs(app, all_verbs())
except BrokenVerb as _exc:
    BROKEN = _exc  # reported by main(): one paragraph, not a traceback at import


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: a half-built lab is rolled back, `run` brings its lab down."""
    raise SystemExit(128 + signum)


def main() -> None:
    from labkit.cli.output import err_console

    signal.signal(signal.SIGTERM, _terminate)
    if BROKEN is not None:
        if os.environ.get("LABKIT_DEBUG"):
            raise BROKEN
        err_console.print(f"[bold red]error:[/] {BROKEN.render()}")
        sys.exit(1)
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code here
    except LabkitError as exc:
        err_console.print(f"[bold red]error:[/] {exc.render()}")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except Exception as exc:
        # A bug in labkit, not a user error: still one paragraph, the trace on request.
        if os.environ.get("LABKIT_DEBUG"):
            raise
        err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc}. "
                          "This is a labkit bug; run again with LABKIT_DEBUG=1 for the "
                          "traceback and report it.", soft_wrap=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
