"""Where labs run: this machine's kernel (LocalHost) or a VM with a named kernel (VmHost),
both behind one small interface, containerlab-runtime style (start, call, run, popen,
stop). Lab and Node (labkit.lab.lab) reach every node through its host, so the CLI, the
widgets and scenarios never ask where a lab lives. A remote machine over SSH would be one
more class with the same methods (docs/multi-host.md).
"""
