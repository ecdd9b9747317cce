"""Where labs run: this machine's kernel (LocalHost) or a VM with a named kernel (VmHost),
both behind one protocol (host.LabHost: start, release, status, call, run, popen, exec...).
Lab and Node (labkit.lab) reach every node through its host, so the CLI, the widgets and
scenarios never ask where a lab lives; this package imports nothing of labkit.lab. The
layers above reach the VM machinery (vm/) only through kernels.py and vms.py. A remote
machine over SSH would be one more class with the same methods (docs/multi-host.md).
"""
