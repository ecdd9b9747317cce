"""The L7 policy in user space: the same rule the BPF programs enforce in sockmap mode
(labkit.features.kproxy.programs.Rule), applied by the splice and boomerang proxies so
that every mode drops exactly the same messages and their results compare.

A stream is a sequence of messages, each a big-endian length prefix (2 or 4 bytes)
followed by that many payload bytes. A message whose payload starts with the rule's
prefix is dropped whole; every other message passes unchanged; a length above
max_message is a stream error (the proxy resets the connection, as the kernel's stream
parser aborts the stream). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit.features.kproxy.programs import Rule


class StreamError(Exception):
    """A message longer than the rule allows: the connection is reset. `passed` holds the
    complete messages before it, which still go through (as in the kernel)."""

    def __init__(self, message: str, passed: bytes = b"") -> None:
        super().__init__(message)
        self.passed = passed


@dataclass
class Tally:
    pass_msgs: int = 0
    pass_bytes: int = 0
    drop_msgs: int = 0
    drop_bytes: int = 0


def header_length(rule: Rule, header: bytes) -> int:
    """Whole message length (prefix + payload) from its length prefix."""
    size = int.from_bytes(header[: rule.header], "big")
    if size > rule.max_message:
        raise StreamError(f"a {size}-byte message is longer than the policy's "
                          f"max_message ({rule.max_message})")
    return rule.header + size


def dropped(rule: Rule, message_start: bytes) -> bool:
    """Does the message (its first bytes, prefix included) match the drop rule?"""
    return message_start[rule.header: rule.header + len(rule.prefix)] == rule.prefix


class Filter:
    """Feed bytes in arrival order; take out the bytes to forward. Keeps an incomplete
    message until the rest arrives (what the kernel's stream parser does)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.buf = bytearray()
        self.tally = Tally()

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = bytearray()
        pos = 0
        while len(self.buf) - pos >= self.rule.header:
            try:
                length = header_length(self.rule, self.buf[pos: pos + self.rule.header])
            except StreamError as exc:
                raise StreamError(str(exc), bytes(out)) from None
            if len(self.buf) - pos < length:
                break
            msg = self.buf[pos: pos + length]
            if dropped(self.rule, msg):
                self.tally.drop_msgs += 1
                self.tally.drop_bytes += length
            else:
                self.tally.pass_msgs += 1
                self.tally.pass_bytes += length
                out += msg
            pos += length
        del self.buf[:pos]
        return bytes(out)

    @property
    def incomplete(self) -> int:
        """Bytes of a message still waiting for its end (dropped if the stream ends)."""
        return len(self.buf)
