"""The TIPC v7 Wireshark plugin: where labkit ships it, and putting it where Wireshark looks.

Wireshark loads every .lua file in its personal Lua plugin folder at start
(`~/.local/lib/wireshark/plugins` on Linux, which `tshark -G folders` confirms), so
installing is one copy; `tshark -X lua_script:PATH` loads it for one run without
installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources

from labkit.errors import LabkitError, UsageError

PLUGIN_FILE = "tipcv7.lua"
INSTALLED_NAME = "labkit_tipcv7.lua"
DEFAULT_PERSONAL_DIR = "~/.local/lib/wireshark/plugins"


def plugin_path() -> str:
    """The plugin file inside the installed labkit package."""
    path = str(resources.files("labkit.features.tipc.wireshark") / PLUGIN_FILE)
    if not os.path.isfile(path):
        raise LabkitError(f"the Wireshark plugin {path} is missing from this labkit install.",
                          hint="Reinstall labkit (`pip install -e .` in the checkout).")
    return path


def tshark_binary() -> str | None:
    return shutil.which("tshark")


def _tshark_folders() -> dict[str, str]:
    tshark = tshark_binary()
    if tshark is None:
        return {}
    try:
        out = subprocess.run([tshark, "-G", "folders"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    folders: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            folders.setdefault(name.strip(), value.strip())
    return folders


def personal_plugin_dir() -> tuple[str, str]:
    """Wireshark's personal Lua plugin folder, and how it was found."""
    folder = _tshark_folders().get("Personal Lua Plugins")
    if folder:
        return folder, "as `tshark -G folders` reports it"
    return os.path.expanduser(DEFAULT_PERSONAL_DIR), "Wireshark's default on Linux"


@dataclass(frozen=True)
class Installed:
    path: str
    source: str
    how_found: str
    loaded_by_tshark: bool | None  # None: tshark not installed, or not the personal folder

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "source": self.source, "dir_from": self.how_found,
                "loaded_by_tshark": self.loaded_by_tshark}


def install(directory: str | None = None) -> Installed:
    """Copy the plugin into directory (default: the personal Lua plugin folder)."""
    if directory:
        target_dir, how = os.path.abspath(os.path.expanduser(directory)), "--dir"
        if os.path.exists(target_dir) and not os.path.isdir(target_dir):
            raise UsageError(f"--dir {directory} is a file, not a directory.",
                             hint="Give the folder Wireshark loads Lua plugins from.")
    else:
        target_dir, how = personal_plugin_dir()
    source = plugin_path()
    target = os.path.join(target_dir, INSTALLED_NAME)
    try:
        os.makedirs(target_dir, exist_ok=True)
        tmp = f"{target}.tmp{os.getpid()}"
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}.",
                         hint="Install as the user who runs Wireshark (no root needed), or "
                              "pick a writable folder with --dir.") from None
    loaded = _tshark_loads(target) if how != "--dir" else None
    return Installed(target, source, how, loaded)


def _tshark_loads(target: str) -> bool | None:
    """Whether `tshark -G plugins` lists the installed file (None without tshark)."""
    tshark = tshark_binary()
    if tshark is None:
        return None
    try:
        out = subprocess.run([tshark, "-G", "plugins"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return any(target in line for line in out.splitlines())
