"""The kernel's TLS handshake upcall, served by labkit: a daemon per lab node that answers
READY with ACCEPT, does the TLS 1.3 handshake in user space, installs kTLS on the socket
and reports DONE; the in-kernel consumers (NVMe/TCP, NFS) labs put on top; a TLS peer
for OpenSSL; and the checks on what crossed the wire.

One module per job. Facts: uapi (handshake family, kTLS, errnos). Netlink: messages (pure
request/reply bytes), genl (the socket). TLS: labkit.ktls (key schedule, kTLS install),
ktls (the kernel's record layer), records (reading whole records off a socket), engines
(Python's ssl for x509/unauth, tlslite-ng for external PSK), handshaker (one request end
to end). Keys: keyring (the kernel's key API), certs (the lab CA). The daemon: daemon,
pool, events. The lab: config, feature, setup, nvme, nfs, status, verify, verdicts, dos.
This package imports nothing itself.
"""
