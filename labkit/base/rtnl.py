"""rtnetlink sockets living in lab namespaces, and kernel errors turned into user errors.

The socket is created while this thread is inside the namespace (see netns.entered), so
pyroute2 never forks a helper and can never create a namespace by accident.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from pyroute2.iproute import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from labkit.base import netns
from labkit.errors import LabkitError, Loc


def iproute(ns: str) -> IPRoute:
    with netns.entered(ns):
        return IPRoute(ext_ack=True)


@contextlib.contextmanager
def opened(ns: str) -> Iterator[IPRoute]:
    ipr = iproute(ns)
    try:
        yield ipr
    finally:
        ipr.close()


def kernel_error(exc: BaseException, what: str, loc: Loc | None = None) -> LabkitError:
    """Say which step the kernel refused and why, pointing at the topology line."""
    if isinstance(exc, NetlinkError):
        code = exc.code
        text = str(exc.args[1]) if len(exc.args) > 1 and exc.args[1] else os.strerror(code)
    elif isinstance(exc, OSError) and exc.errno:
        code, text = exc.errno, exc.strerror or os.strerror(exc.errno)
    else:
        code, text = 0, str(exc)
    hint = {
        errno.EPERM: "labkit needs root (CAP_NET_ADMIN) for this.",
        errno.EEXIST: "Something with that name or address already exists; "
                      "is another lab using it? Try `labkit status`.",
        errno.EOPNOTSUPP: "This kernel lacks the feature; `labkit doctor` lists what it has.",
        errno.ENETUNREACH: "The gateway is not reachable from the node's subnets.",
    }.get(code, "")
    return LabkitError(f"the kernel refused to {what}: {text}.", hint=hint, loc=loc)
