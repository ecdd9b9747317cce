"""Numbers of the handshake netlink family, kTLS and the kernel key API: the one place
they live.

From include/uapi/linux/handshake.h (Documentation/netlink/specs/handshake.yaml),
include/uapi/linux/tls.h, include/uapi/linux/keyctl.h and net/handshake/*.c as of 6.12.
Standard library only: the daemon imports this at start under emulation.
"""

from __future__ import annotations

# -- the generic netlink family ------------------------------------------------------------

FAMILY = "handshake"
FAMILY_VERSION = 1
MCGRP_TLSHD = "tlshd"  # the multicast group READY goes to (= the handler class's name)

HANDLER_CLASS_NONE = 0
HANDLER_CLASS_TLSHD = 1

MSG_TYPE_CLIENTHELLO = 1
MSG_TYPE_SERVERHELLO = 2
MSG_TYPES = {MSG_TYPE_CLIENTHELLO: "clienthello", MSG_TYPE_SERVERHELLO: "serverhello"}

AUTH_UNAUTH = 1
AUTH_PSK = 2
AUTH_X509 = 3
AUTH_MODES = {AUTH_UNAUTH: "unauth", AUTH_PSK: "psk", AUTH_X509: "x509"}

CMD_READY = 1
CMD_ACCEPT = 2
CMD_DONE = 3
COMMAND_NAMES = {CMD_READY: "READY", CMD_ACCEPT: "ACCEPT", CMD_DONE: "DONE"}

# attribute set "x509" (nested in ACCEPT's CERTIFICATE)
A_X509_CERT = 1
A_X509_PRIVKEY = 2

# attribute set "accept" (READY carries HANDLER_CLASS from it too)
A_ACCEPT_SOCKFD = 1
A_ACCEPT_HANDLER_CLASS = 2
A_ACCEPT_MESSAGE_TYPE = 3
A_ACCEPT_TIMEOUT = 4  # milliseconds
A_ACCEPT_AUTH_MODE = 5
A_ACCEPT_PEER_IDENTITY = 6  # u32 key serial, repeated
A_ACCEPT_CERTIFICATE = 7  # nest of A_X509_*
A_ACCEPT_PEERNAME = 8  # string: the name the client must find in the server's cert
A_ACCEPT_KEYRING = 9  # u32 key serial (kernels after 6.12; older ones link it instead)

# attribute set "done"
A_DONE_STATUS = 1  # positive errno, 0 = success
A_DONE_SOCKFD = 2
A_DONE_REMOTE_AUTH = 3  # u32 key serial of the authenticated peer identity, repeated

MAX_PEERIDS = 5  # struct tls_handshake_req th_peerid[5]
TLS_NO_KEYRING = 0
TLS_NO_PEERID = 0
TLS_NO_CERT = 0
TLS_NO_PRIVKEY = 0


def pending_cap(total_ram_bytes: int, page_size: int = 4096) -> int:
    """The kernel's cap on requests queued but not yet accepted, per network namespace.

    net/handshake/netlink.c handshake_net_init(): si.totalram / (25 * si.mem_unit),
    clamped to 3..50. si_meminfo() counts totalram in pages of mem_unit = PAGE_SIZE
    bytes, so the cap is one request per 25 * PAGE_SIZE pages (400 MiB at 4 KiB pages).
    """
    pages = total_ram_bytes // page_size
    return max(3, min(50, pages // (25 * page_size)))


# -- the kernel key API (include/uapi/linux/keyctl.h) ------------------------------------

KEY_SPEC_THREAD_KEYRING = -1
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
KEYCTL_DESCRIBE = 6
KEYCTL_UNLINK = 9
KEYCTL_SEARCH = 10
KEYCTL_READ = 11
KEYCTL_REVOKE = 3
KEYCTL_INVALIDATE = 21
NVME_KEYRING = ".nvme"  # drivers/nvme/common/keyring.c: the keyring NVMe TLS keys live in
NVME_PSK_TYPE = "psk"  # its key type
