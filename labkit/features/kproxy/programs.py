"""The BPF programs of a sockmap pair, as readable assembler (labkit.features.kproxy.bpfasm).

Two maps tie a pair's connections together, one entry per proxied socket, keyed by the
socket's cookie (SO_COOKIE, what bpf_get_socket_cookie returns for it):

    peers   SOCKHASH  cookie(A) -> socket B, cookie(B) -> socket A: where a byte that
                      arrived on one socket leaves (the egress of the other)
    flows   HASH      cookie(X) -> struct flow: counters for what arrived on X, and the
                      framing state of the stream parser
    misses  ARRAY     [0] = {chunks dropped because their socket had no flow entry,
                      the last such socket's cookie}: never expected, always shown

A third map, `active` (SOCKHASH, cookie(X) -> X), holds the programs: a socket starts
being proxied when it is inserted there, after both sockets are in `peers`, so the
verdict never runs before it knows where to send.

The verdict (BPF_SK_SKB_STREAM_VERDICT) redirects each chunk to the peer socket and
counts it. With an L7 policy a stream parser (BPF_SK_SKB_STREAM_PARSER) frames the stream
into length-prefixed messages first, and the verdict drops the messages whose payload
starts with the policy's prefix, counting them.

Where a message starts: the kernel hands the parser the skb that holds the start of the
message, but not the offset of that start inside it (strparser keeps it where programs
cannot read it). The parser therefore tracks, per socket, the TCP sequence number at
which the next message starts, and finds the offset from the skb's own sequence number
(TCP_SKB_CB(skb)->seq, which sk_skb programs read as skb->cb[0]).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

from labkit.features.kproxy.bpfasm import (
    ADD,
    DW,
    FP,
    GET_SOCKET_COOKIE,
    JEQ,
    JGT,
    JNE,
    MAP_LOOKUP_ELEM,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R8,
    R9,
    SK_DROP,
    SK_REDIRECT_HASH,
    SKB_LOAD_BYTES,
    SUB,
    H,
    Program,
    W,
)

# struct __sk_buff (include/uapi/linux/bpf.h)
SKB_LEN = 0
SKB_CB0 = 48  # cb[0]: for sk_skb programs, the start of skb->cb, i.e. TCP_SKB_CB(skb)->seq

# struct flow: the value of `flows`, one per proxied socket (what arrived on it)
FLOW = struct.Struct("=IIIIQQQQ")
NEXT_SEQ, STARTED, MSG_SEQ = 0, 4, 8  # u32: framing state (stream parser only)
PASS_MSGS, PASS_BYTES, DROP_MSGS, DROP_BYTES = 16, 24, 32, 40  # u64 counters
COOKIE = struct.Struct("=Q")
MISSES = struct.Struct("=QQ")  # value of misses[0]: count, last cookie

HEADER_SIZES = {"u16": 2, "u32": 4}  # framing -> length prefix bytes (big endian)
MAX_PREFIX = 8  # bytes of payload the verdict compares (one 64-bit load)


@dataclass(frozen=True)
class Rule:
    """What the BPF programs enforce (the same rule labkit.features.kproxy.policy applies
    in user space): length-prefixed framing, drop payloads starting with `prefix`."""

    framing: str  # "u16" | "u32"
    prefix: bytes  # 1..8 bytes
    max_message: int  # payload bytes; a longer one is a stream error (connection reset)

    @property
    def header(self) -> int:
        return HEADER_SIZES[self.framing]


@dataclass(frozen=True)
class Counters:
    """struct flow's counters for one socket: what arrived on it and what became of it."""

    pass_msgs: int = 0
    pass_bytes: int = 0
    drop_msgs: int = 0
    drop_bytes: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> Counters:
        v = FLOW.unpack(raw)
        return cls(v[4], v[5], v[6], v[7])

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.pass_msgs + other.pass_msgs, self.pass_bytes + other.pass_bytes,
                        self.drop_msgs + other.drop_msgs, self.drop_bytes + other.drop_bytes)


def _flow_of_this_socket(p: Program, missing: str) -> None:
    """r7 = &flows[cookie of this skb's socket]; fp-8 holds the cookie (the peers key).
    Expects r6 = skb; jumps to `missing` if the socket has no flow entry."""
    p.mov(R1, R6).call(GET_SOCKET_COOKIE)  # r0 = cookie of the socket the data arrived on
    p.stx(DW, FP, -8, R0)  # *(u64 *)(fp - 8) = cookie
    p.ld_map(R1, "flows").mov(R2, FP).alu_imm(ADD, R2, -8).call(MAP_LOOKUP_ELEM)
    p.jmp_imm(JEQ, R0, 0, missing)
    p.mov(R7, R0)  # r7 = &flow


def parser(rule: Rule) -> Program:
    """Stream parser: the length of the message that starts in this skb, 0 while its
    header is incomplete, a negative errno to abort the stream (the socket gets the error
    and the proxy resets the connection)."""
    p = Program("kp_parser")
    p.mov(R6, R1)  # r6 = skb
    _flow_of_this_socket(p, "no_flow")
    p.ldx(W, R8, R6, SKB_CB0)  # r8 = TCP sequence number of the skb's first byte
    p.ldx(W, R1, R7, STARTED)
    p.jmp_imm(JNE, R1, 0, "started")
    p.stx(W, R7, NEXT_SEQ, R8)  # the first byte the parser ever sees starts a message
    p.st_imm(W, R7, STARTED, 1)
    p.label("started")
    p.ldx(W, R9, R7, NEXT_SEQ)
    p.alu32(SUB, R9, R8)  # w9 = next_seq - seq: offset of the message in this skb
    p.mov(R1, R6).mov(R2, R9).mov(R3, FP).alu_imm(ADD, R3, -16).mov_imm(R4, rule.header)
    p.call(SKB_LOAD_BYTES)  # the length prefix -> fp-16
    p.jmp_imm(JNE, R0, 0, "need_more")  # fewer bytes than a header so far
    p.ldx(W if rule.header == 4 else H, R0, FP, -16).be(R0, rule.header * 8)
    p.jmp_imm(JGT, R0, rule.max_message, "too_big")
    p.alu_imm(ADD, R0, rule.header)  # r0 = header + payload
    p.ldx(W, R1, R7, NEXT_SEQ).stx(W, R7, MSG_SEQ, R1)  # this message starts at next_seq
    p.alu32(ADD, R1, R0).stx(W, R7, NEXT_SEQ, R1)  # and the next one right after it
    p.exit()
    p.label("need_more").mov_imm(R0, 0).exit()
    p.label("too_big").mov_imm(R0, -errno.EMSGSIZE).exit()
    p.label("no_flow").mov_imm(R0, -errno.EPROTO).exit()
    return p


def verdict(rule: Rule | None) -> Program:
    """Stream verdict: redirect to the peer socket's egress and count, or (policy) drop a
    message whose payload starts with the prefix, and count that."""
    p = Program("kp_verdict")
    p.mov(R6, R1)  # r6 = skb
    _flow_of_this_socket(p, "untracked")
    if rule is None:
        p.ldx(W, R9, R6, SKB_LEN)  # r9 = bytes in this chunk
        # A FIN reaches the verdict as an empty skb; redirected, it would make the
        # peer's send fail with EPIPE once the proxy has half-closed it.
        p.jmp_imm(JEQ, R9, 0, "empty")
    else:
        p.ldx(W, R9, R7, NEXT_SEQ).ldx(W, R1, R7, MSG_SEQ)
        p.alu32(SUB, R9, R1)  # r9 = length of this message (set by the parser)
        p.ldx(W, R8, R6, SKB_CB0)
        p.ldx(W, R2, R7, MSG_SEQ).alu32(SUB, R2, R8)  # w2 = offset of the message in skb
        p.alu_imm(ADD, R2, rule.header)  # r2 = offset of its payload
        p.st_imm(DW, FP, -16, 0)  # fp-16: 8 zero bytes, the payload's first bytes go there
        p.mov(R1, R6).mov(R3, FP).alu_imm(ADD, R3, -16).mov_imm(R4, len(rule.prefix))
        p.call(SKB_LOAD_BYTES)
        p.jmp_imm(JNE, R0, 0, "pass")  # payload shorter than the prefix: no match
        p.ldx(DW, R1, FP, -16)
        p.ld_imm64(R2, int.from_bytes(rule.prefix.ljust(MAX_PREFIX, b"\0"), "little"))
        p.jmp(JEQ, R1, R2, "drop")
    p.label("pass")
    p.mov_imm(R1, 1).atomic_add(DW, R7, PASS_MSGS, R1)
    p.atomic_add(DW, R7, PASS_BYTES, R9)
    p.mov(R1, R6).ld_map(R2, "peers").mov(R3, FP).alu_imm(ADD, R3, -8).mov_imm(R4, 0)
    p.call(SK_REDIRECT_HASH)  # SK_PASS with the redirect set, SK_DROP if no peer
    p.exit()
    if rule is not None:
        p.label("drop")
        p.mov_imm(R1, 1).atomic_add(DW, R7, DROP_MSGS, R1)
        p.atomic_add(DW, R7, DROP_BYTES, R9)
        p.mov_imm(R0, SK_DROP).exit()
    # A socket without a flow entry is not one this proxy joined: drop, and count it.
    p.label("untracked")
    p.st_imm(W, FP, -20, 0)
    p.ld_map(R1, "misses").mov(R2, FP).alu_imm(ADD, R2, -20).call(MAP_LOOKUP_ELEM)
    p.jmp_imm(JEQ, R0, 0, "empty")
    p.mov_imm(R1, 1).atomic_add(DW, R0, 0, R1)
    p.ldx(DW, R1, FP, -8).stx(DW, R0, 8, R1)  # the cookie it came from, for diagnosis
    p.label("empty").mov_imm(R0, SK_DROP).exit()
    return p
