"""The one generic netlink transport (labkit.base.genl), against this kernel's own nlctrl
family: resolve by name, dumps end at NLMSG_DONE, refusals carry the kernel's errno, and
a socket made for a namespace lives there."""

from __future__ import annotations

import errno

import pytest

from labkit.base import genl


def test_resolve_the_control_family_and_refuse_an_unknown_one() -> None:
    with genl.open_socket(5.0) as sock:
        family, groups = genl.resolve(sock, "nlctrl", 1)
        assert family == genl.GENL_ID_CTRL and "notify" in groups
        with pytest.raises(genl.NoFamily) as exc:
            genl.resolve(sock, "lk-nofamily", 2)
        assert exc.value.errno == errno.ENOENT and "lk-nofamily" in str(exc.value)


def test_dump_lists_every_family_and_a_refusal_has_its_errno() -> None:
    with genl.open_socket(5.0) as sock:
        dump = genl.genl_request(genl.GENL_ID_CTRL, genl.CTRL_CMD_GETFAMILY, b"", 7,
                                 flags=genl.NLM_F_REQUEST | genl.NLM_F_DUMP)
        every = genl.exchange(sock, dump, 7)
        ids = {genl.parse_family(r)[0] for r in every}
        assert genl.GENL_ID_CTRL in ids and len(ids) == len(every) > 1
        bad = genl.genl_request(genl.GENL_ID_CTRL, 0xEE, b"", 8)  # no such command
        with pytest.raises(genl.KernelRefused) as exc:
            genl.exchange(sock, bad, 8)
        assert exc.value.errno == errno.EOPNOTSUPP


SO_NETNS_COOKIE = 71  # asm-generic/socket.h: which namespace a socket belongs to


def test_socket_for_a_namespace_lives_there(scratch_ns: str) -> None:
    import socket

    from labkit.base import netns

    def cookie(sock: socket.socket) -> bytes:
        return sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)

    with genl.open_socket(5.0, scratch_ns) as there, genl.open_socket(5.0) as here, \
            netns.socket_in(scratch_ns, socket.AF_INET, socket.SOCK_DGRAM) as probe:
        assert genl.resolve(there, "nlctrl", 1)[0] == genl.GENL_ID_CTRL
        assert cookie(there) == cookie(probe)
        assert cookie(here) != cookie(probe)  # positive control: ours is another one
