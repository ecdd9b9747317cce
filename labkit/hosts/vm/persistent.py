"""Persistent VMs: start one in the background, exec into it, list, stop.

State lives in /run/labkit/vm/NAME/ (gone after a host reboot, like the VM):
  config.json   how to boot it, incl. the caller's environment (0600)
  state.json    status, supervisor pid/pgid, guest info (0644, read by `list`)
  ctl.sock      where `exec` connects (0600: root only)
  console.log   kernel and agent messages, for post-mortems (0600)

One module per job, gathered here under the names callers inside labkit.hosts use:
vmstate (records, list, lock), lifecycle (start, stop), execclient (commands), channel
(a relayed byte stream to a socket in the guest).
"""

from __future__ import annotations

from labkit.hosts.vm.channel import Relay, connect
from labkit.hosts.vm.execclient import VmDown, _control, exec_, exec_pty
from labkit.hosts.vm.lifecycle import _cleanup, start, stop
from labkit.hosts.vm.vmstate import (
    DEFAULT_NAME,
    LIVE,
    VmInfo,
    _dir,
    _info,
    check_name,
    info,
    list_vms,
    locked,
    parse_forward,
)

__all__ = ["DEFAULT_NAME", "LIVE", "Relay", "VmDown", "VmInfo", "_cleanup", "_control", "_dir",
           "_info", "check_name", "connect", "exec_", "exec_pty", "info", "list_vms",
           "locked", "parse_forward", "start", "stop"]
