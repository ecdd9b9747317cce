"""The `labkit` command: one module per verb, each a thin layer over the Python API."""
