"""Where the VM runner keeps things, in one place so tests can redirect them.

Downloads are a plain cache (/var/cache/labkit). Unpacked kernels cannot live there:
the guest sees the host's filesystem, but vng mounts an empty tmpfs over /var/cache in
the guest, and the guest needs the kernel's modules for `modprobe`; so they go to
/var/lib/labkit/kernels. Running VMs are volatile state that must vanish with the host,
so it lives under /run. All can be moved with environment variables (tests, CI).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("LABKIT_CACHE_DIR", "/var/cache/labkit"))


def kernels_dir() -> Path:
    return Path(os.environ.get("LABKIT_KERNELS_DIR", "/var/lib/labkit/kernels"))


def downloads_dir() -> Path:
    return cache_dir() / "downloads"


def state_dir() -> Path:
    """One subdirectory per persistent VM: /run/labkit/vm/NAME/."""
    return Path(os.environ.get("LABKIT_VM_STATE_DIR", "/run/labkit/vm"))


def apt_dir() -> Path:
    """labkit's own apt configuration and package lists (the kernel catalogue): never /etc/apt."""
    return Path(os.environ.get("LABKIT_APT_DIR", "/var/lib/labkit/apt"))
