"""The sockmap programs: the assembler encodes what the kernel's notation says, and every
variant labkit loads passes the running kernel's verifier (a broken one beside them is
refused, with the verifier's own explanation)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from labkit.features.kproxy import bpfsys
from labkit.features.kproxy.bpfasm import EXIT, JEQ, JMP, R0, R1, Program
from labkit.features.kproxy.programs import FLOW, MISSES, Rule, parser, verdict


def test_instructions_encode_as_the_uapi_says() -> None:
    p = Program("t").mov_imm(R0, 1).exit()
    assert p.encode() == bytes.fromhex("b700000001000000" "9500000000000000")


def test_jumps_are_resolved_to_relative_offsets() -> None:
    p = Program("t").jmp_imm(JEQ, R1, 7, "out").mov_imm(R0, 1).label("out").exit()
    code = p.encode()
    # if r1 == 7 goto +1 (skips the mov): opcode 0x15, dst r1, off 1, imm 7
    assert code[:8] == bytes.fromhex("1501010007000000")
    assert code[16] == JMP | EXIT


def test_a_map_reference_takes_two_slots_with_the_fd() -> None:
    p = Program("t").ld_map(R1, "peers").jmp_imm(JEQ, R1, 0, "x").label("x").exit()
    code = p.encode({"peers": 42})
    # ld_imm64 r1 (src 1 = BPF_PSEUDO_MAP_FD), imm = the fd; then an all-zero second slot
    assert code[:16] == bytes.fromhex("181100002a000000" + "00" * 8)
    assert code[16:24] == bytes.fromhex("1501000000000000")  # offset counts slots, not calls


def test_undefined_labels_and_maps_are_assembly_errors() -> None:
    with pytest.raises(ValueError, match="jumps to nowhere_, which is not defined"):
        Program("t").goto("nowhere_").encode()
    with pytest.raises(ValueError, match="uses map flows, which was not given"):
        Program("t").ld_map(R1, "flows").encode({})


RULES = [None, Rule("u32", b"DROP", 65536), Rule("u16", b"X", 65535),
         Rule("u32", b"12345678", 1)]


@pytest.fixture
def maps() -> Iterator[dict[str, int]]:
    fds = {"peers": bpfsys.map_create(bpfsys.MAP_SOCKHASH, 8, 8, 16, "kp_t_peers"),
           "flows": bpfsys.map_create(bpfsys.MAP_HASH, 8, FLOW.size, 16, "kp_t_flows"),
           "misses": bpfsys.map_create(bpfsys.MAP_ARRAY, 4, MISSES.size, 1, "kp_t_misses")}
    yield fds
    for fd in fds.values():
        os.close(fd)


@pytest.mark.needs_root
@pytest.mark.parametrize("rule", RULES, ids=["plain", "u32-DROP", "u16-X", "u32-8-bytes"])
def test_the_kernel_verifier_accepts_every_variant(maps: dict[str, int],
                                                    rule: Rule | None) -> None:
    progs = [verdict(rule)] + ([parser(rule)] if rule is not None else [])
    for prog in progs:
        fd = bpfsys.prog_load(bpfsys.PROG_SK_SKB, prog.encode(maps), prog.name)
        try:
            info = bpfsys.info(fd, "prog")
            assert info.name == prog.name and info.type == bpfsys.PROG_SK_SKB
            used = {"peers", "flows", "misses"} if prog.name == "kp_verdict" else {"flows"}
            assert set(info.map_ids) == {bpfsys.info(maps[m], "map").id for m in used}
            assert bpfsys.exists("prog", info.id)
        finally:
            os.close(fd)


@pytest.mark.needs_root
def test_a_broken_program_is_refused_with_the_verifiers_reason() -> None:
    broken = Program("kp_broken").exit()  # returns r0, which was never set
    with pytest.raises(bpfsys.BpfError) as info:
        bpfsys.prog_load(bpfsys.PROG_SK_SKB, broken.encode(), broken.name)
    assert "R0 !read_ok" in info.value.log


@pytest.mark.needs_root
def test_a_freed_program_is_gone_by_id() -> None:
    prog = verdict(None)
    peers = bpfsys.map_create(bpfsys.MAP_SOCKHASH, 8, 8, 4, "kp_t_peers")
    flows = bpfsys.map_create(bpfsys.MAP_HASH, 8, FLOW.size, 4, "kp_t_flows")
    misses = bpfsys.map_create(bpfsys.MAP_ARRAY, 4, MISSES.size, 1, "kp_t_misses")
    fd = bpfsys.prog_load(bpfsys.PROG_SK_SKB, prog.encode(
        {"peers": peers, "flows": flows, "misses": misses}), prog.name)
    pid = bpfsys.info(fd, "prog").id
    mid = bpfsys.info(peers, "map").id
    assert pid in bpfsys.ids("prog") and mid in bpfsys.ids("map")  # positive control
    for x in (fd, peers, flows, misses):
        os.close(x)
    from labkit.base.wait import wait_until

    wait_until(lambda: not bpfsys.exists("prog", pid) and not bpfsys.exists("map", mid), 10,
               "the kernel to free the program and its maps")


def _pair(ns: str, port: int) -> tuple[socket.socket, socket.socket, socket.socket]:
    from labkit.base import netns

    listener = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    client = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    client.connect(("127.0.0.1", port))
    accepted, _ = listener.accept()
    return client, accepted, listener


@pytest.mark.needs_root
def test_sockmap_refuses_a_socket_whose_peer_already_sent_its_fin(scratch_ns: str) -> None:
    """Why the sockmap proxy needs a user-space fallback: the kernel joins only
    ESTABLISHED sockets; the refused join leaves nothing behind in the maps."""
    from labkit.base.wait import wait_until
    from labkit.features.kproxy import tcpstate
    from labkit.features.kproxy.sockmap import Sockmap, cookie

    socks = [*_pair(scratch_ns, 7001), *_pair(scratch_ns, 7002), *_pair(scratch_ns, 7003)]
    c1, a1, _, c2, b, _, c3, a3, _ = socks
    with Sockmap(None) as sm:
        try:
            sm.join(a1, b)  # positive control: two ESTABLISHED sockets join
            assert bpfsys.map_lookup(sm.flows, cookie(a1), FLOW.size) is not None
            c3.shutdown(socket.SHUT_WR)
            wait_until(lambda: tcpstate.read(a3).state == 8, 10, "CLOSE_WAIT")
            c4, b4, l4 = _pair(scratch_ns, 7004)
            socks += [c4, b4, l4]
            with pytest.raises(OSError) as info:
                sm.join(a3, b4)
            assert info.value.errno == errno.EOPNOTSUPP
            for key in (cookie(a3), cookie(b4)):
                for fd in (sm.flows, sm.peers, sm.active):
                    assert bpfsys.map_lookup(fd, key, 8) is None
        finally:
            for x in socks:
                x.close()
