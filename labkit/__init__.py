"""labkit: network-namespace testbeds for kernel networking labs.

The public API is Lab (and its Nodes); the CLI and the widgets sit on top of it.
"""

from labkit.errors import LabkitError
from labkit.lab.lab import Lab, Node

__all__ = ["Lab", "LabkitError", "Node"]
