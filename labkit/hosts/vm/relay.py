"""`python -m labkit.hosts.vm.relay VM -- CMD...`: a local process standing for a command
that runs in a persistent VM.

Node.popen on a lab in a VM returns a subprocess.Popen of this relay, so callers keep
using pipes, wait(), poll() and kill() as with a local process: its stdin is forwarded
(when it is not a terminal), its stdout/stderr are the command's, its exit status is the
command's, and when it dies the supervisor kills the command in the guest. Imports only
the VM client, so it starts in a fraction of the CLI's time.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m labkit.hosts.vm.relay VM -- CMD...", file=sys.stderr)
        return 2
    from labkit.errors import LabkitError
    from labkit.hosts.vm import persistent

    # SIGTERM ends the relay like Ctrl-C would: the command in the guest is signalled too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        forward = not os.isatty(0)
        return int(persistent.exec_(args[0], args[2:], cwd="/", forward_stdin=forward,
                                    merge_stderr=False))
    except LabkitError as exc:
        print(f"labkit: {exc.render()}", file=sys.stderr)
        return 255
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
