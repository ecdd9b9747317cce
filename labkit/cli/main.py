"""Entry point: assembles the verbs and turns LabkitError into one paragraph and an exit code.

Exit codes: 0 ok, 1 failure, 2 usage or validation error (verifications: 0 pass, 1 fail,
2 could not run).
"""

from __future__ import annotations

import importlib
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

# One module per verb; each has register(app). Order is the order in --help.
VERBS = [
    "validate", "up", "down", "status", "exec_", "shell", "check", "run", "graph",
    "capture", "traffic", "verify", "inject", "tipc", "doctor", "vm",
]


def _register() -> None:
    for verb in VERBS:
        try:
            module = importlib.import_module(f"labkit.cli.{verb}")
        except ModuleNotFoundError as exc:
            if exc.name == f"labkit.cli.{verb}":
                continue  # a verb still being written
            raise
        module.register(app)


_register()


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: a half-built lab is rolled back, `run` brings its lab down."""
    raise SystemExit(128 + signum)


def main() -> None:
    from labkit.cli.output import err_console

    signal.signal(signal.SIGTERM, _terminate)
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code here
    except LabkitError as exc:
        err_console.print(f"[bold red]error:[/] {exc.render()}", soft_wrap=True)
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
