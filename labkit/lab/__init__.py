"""Labs: the Lab/Node API, placement, building, spanning kernels, teardown, state."""

from labkit.lab import dispatch as _dispatch  # noqa: F401  (registers how labs are rebuilt)
