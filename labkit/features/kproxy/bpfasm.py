"""A small eBPF assembler: programs written as Python calls that read like the kernel's
own notation (the verifier log prints the same instructions), with named jump labels and
named map references, encoded to the bytes bpf(BPF_PROG_LOAD) takes.

    p = Program("kp_parser")
    p.mov(R6, R1)                          # r6 = ctx
    p.jlt_imm(R0, 4, "need_more")          # if r0 < 4 goto need_more
    p.label("need_more")
    p.exit()

No compiler is involved, so a reviewer reads exactly what the kernel verifies. Encoding:
include/uapi/linux/bpf_common.h and bpf.h (struct bpf_insn: u8 code, u8 dst:4 src:4,
s16 off, s32 imm; ld_imm64 takes two slots). Standard library only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10  # the read-only frame pointer; the stack is the 512 bytes below it

# instruction classes
LD, LDX, ST, STX, ALU, JMP, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
# modes
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
# ALU operations
ADD, SUB, MUL, OR, AND, LSH, RSH, MOV, END = 0x00, 0x10, 0x20, 0x40, 0x50, 0x60, 0x70, 0xB0, 0xD0
K, X = 0x00, 0x08  # source: immediate or register
TO_BE = 0x08  # END with this source: convert from host order to big endian
# jumps
JA, JEQ, JGT, JGE, JNE, JLT, JLE, CALL, EXIT = 0x00, 0x10, 0x20, 0x30, 0x50, 0xA0, 0xB0, 0x80, 0x90
PSEUDO_MAP_FD = 1  # ld_imm64 src: imm is a map fd, the kernel swaps in the map

# helper function ids (enum bpf_func_id)
MAP_LOOKUP_ELEM = 1
SKB_LOAD_BYTES = 26
GET_SOCKET_COOKIE = 46
SK_REDIRECT_HASH = 72

# the return values of SK_SKB programs (enum sk_action)
SK_DROP, SK_PASS = 0, 1


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


@dataclass
class Program:
    """Instructions, jump labels and map references, assembled by encode(maps)."""

    name: str
    slots: list[tuple] = field(default_factory=list)  # ("insn", ...) | ("map", dst, name)
    labels: dict[str, int] = field(default_factory=dict)

    # -- layout ------------------------------------------------------------------------
    def _here(self) -> int:
        return sum(2 if s[0] == "map" else 1 for s in self.slots)

    def label(self, name: str) -> Program:
        if name in self.labels:
            raise ValueError(f"label {name} defined twice in {self.name}")
        self.labels[name] = self._here()
        return self

    def _add(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0,
             imm: int = 0) -> Program:
        self.slots.append(("insn", code, dst, src, off, imm))
        return self

    # -- moves and arithmetic (64-bit) -------------------------------------------------
    def mov(self, dst: int, src: int) -> Program:
        """dst = src"""
        return self._add(ALU64 | MOV | X, dst, src)

    def mov_imm(self, dst: int, imm: int) -> Program:
        """dst = imm (sign-extended 32-bit)"""
        return self._add(ALU64 | MOV | K, dst, imm=imm)

    def alu_imm(self, op: int, dst: int, imm: int) -> Program:
        """dst op= imm, e.g. alu_imm(ADD, R0, 4) is r0 += 4"""
        return self._add(ALU64 | op | K, dst, imm=imm)

    def alu(self, op: int, dst: int, src: int) -> Program:
        """dst op= src"""
        return self._add(ALU64 | op | X, dst, src)

    def alu32(self, op: int, dst: int, src: int) -> Program:
        """w{dst} op= w{src}: 32-bit, wraps like a TCP sequence number, zero-extends"""
        return self._add(ALU | op | X, dst, src)

    def be(self, dst: int, bits: int) -> Program:
        """dst = be{bits}(dst): bytes read from the network, in host order"""
        return self._add(ALU | END | TO_BE, dst, imm=bits)

    def ld_imm64(self, dst: int, value: int) -> Program:
        """dst = a 64-bit constant (two slots)"""
        value &= (1 << 64) - 1
        lo, hi = value & 0xFFFFFFFF, value >> 32
        self.slots.append(("insn", LD | DW | IMM, dst, 0, 0, struct.unpack("<i", struct.pack(
            "<I", lo))[0]))
        self.slots.append(("insn", 0, 0, 0, 0, struct.unpack("<i", struct.pack("<I", hi))[0]))
        return self

    def ld_map(self, dst: int, name: str) -> Program:
        """dst = &map (the fd is filled in at encode time)"""
        self.slots.append(("map", dst, name))
        return self

    # -- memory ------------------------------------------------------------------------
    def ldx(self, size: int, dst: int, src: int, off: int) -> Program:
        """dst = *(size *)(src + off)"""
        return self._add(LDX | MEM | size, dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> Program:
        """*(size *)(dst + off) = src"""
        return self._add(STX | MEM | size, dst, src, off)

    def st_imm(self, size: int, dst: int, off: int, imm: int) -> Program:
        """*(size *)(dst + off) = imm"""
        return self._add(ST | MEM | size, dst, 0, off, imm)

    def atomic_add(self, size: int, dst: int, off: int, src: int) -> Program:
        """lock *(size *)(dst + off) += src  (size W or DW)"""
        return self._add(STX | ATOMIC | size, dst, src, off, ADD)

    # -- control -----------------------------------------------------------------------
    def jmp_imm(self, op: int, dst: int, imm: int, target: str) -> Program:
        """if dst op imm goto target (unsigned compare for JGT/JGE/JLT/JLE)"""
        return self._add(JMP | op | K, dst, 0, target, imm)

    def jmp(self, op: int, dst: int, src: int, target: str) -> Program:
        """if dst op src goto target"""
        return self._add(JMP | op | X, dst, src, target)

    def goto(self, target: str) -> Program:
        return self._add(JMP | JA, 0, 0, target)

    def call(self, helper: int) -> Program:
        """r0 = helper(r1, ..., r5); r1-r5 are clobbered"""
        return self._add(JMP | CALL, imm=helper)

    def exit(self) -> Program:
        """return r0"""
        return self._add(JMP | EXIT)

    # -- output ------------------------------------------------------------------------
    def encode(self, maps: dict[str, int] | None = None) -> bytes:
        """The instruction bytes, with jump offsets resolved and map fds filled in."""
        maps = maps or {}
        out = []
        pc = 0
        for slot in self.slots:
            if slot[0] == "map":
                _, dst, name = slot
                if name not in maps:
                    raise ValueError(f"{self.name} uses map {name}, which was not given")
                out.append(insn(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, maps[name]))
                out.append(insn(0))
                pc += 2
                continue
            _, code, dst, src, off, imm = slot
            if isinstance(off, str):
                if off not in self.labels:
                    raise ValueError(f"{self.name} jumps to {off}, which is not defined")
                off = self.labels[off] - (pc + 1)
            out.append(insn(code, dst, src, off, imm))
            pc += 1
        return b"".join(out)

    def __len__(self) -> int:
        return self._here()
