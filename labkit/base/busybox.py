"""The machine's statically linked busybox, if it has one: the VM's initramfs needs it, and
it runs commands in a namespace without the dynamic loading that costs ~160 ms per command
under TCG (labkit.hosts.local.netns_exec)."""

from __future__ import annotations

import functools


@functools.cache
def static_busybox() -> str | None:
    """Its path, or None where every busybox on PATH is dynamically linked (or none is)."""
    import shutil  # here: it imports bz2 and lzma, ~0.15 s of a lab VM daemon's start

    for name in ("busybox-static", "busybox.static", "busybox"):
        path = shutil.which(name)
        if path is None:
            continue
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
        except OSError:
            continue
        if b"ld-linux" not in head:  # no PT_INTERP string: statically linked
            return path
    return None
