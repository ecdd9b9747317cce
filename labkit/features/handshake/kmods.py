"""Kernel modules and pseudo-filesystems the consumers need, next to the kernel.

Lab VMs load the feature's modules at boot; a kernel-tier VM or a native kernel may not
have, so each consumer loads what it needs (modprobe is idempotent) and mounts configfs
where the VM did not. Both are done in the VM's (or host's) root mount namespace, which
is where labkit's kernel-facing code runs.
"""

from __future__ import annotations

import os
import subprocess

from labkit.errors import LabkitError, MissingFeatureError

CONFIGFS = "/sys/kernel/config"


def modprobe(*modules: str) -> None:
    for module in modules:
        res = subprocess.run(["modprobe", module], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise MissingFeatureError(
                f"the kernel module {module} cannot be loaded: "
                f"{(res.stderr or res.stdout).strip() or f'exit {res.returncode}'}.",
                hint="Run the lab on a kernel that has it (`labkit doctor --all-kernels`), "
                     "e.g. `--vm debian-6.12`.")


def ensure_configfs() -> str:
    if not os.path.ismount(CONFIGFS):
        res = subprocess.run(["mount", "-t", "configfs", "none", CONFIGFS],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0 and not os.path.ismount(CONFIGFS):
            raise LabkitError(f"cannot mount configfs on {CONFIGFS}: "
                              f"{res.stderr.strip()}.",
                              hint="NVMe targets are configured through configfs.")
    return CONFIGFS
