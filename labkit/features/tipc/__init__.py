"""TIPC: clusters of lab nodes over eth and udp bearers, their keys, and their checks.

One module per job: uapi (kernel numbers and limits) and identity (node ids, keys) are
the single source of every TIPC fact; attributes, messages and client speak the TIPCv2
netlink family; layers are the scapy dissectors; config, setup, status, verify, verdicts,
inject and endpoint are what labs use. This package imports nothing itself, so the
traffic endpoint loads without pyroute2 or scapy.
"""
