"""`labkit handshake trace` reads the daemon's event log as `tail -F` writes it: lines that
arrive together are all shown at once, not held back until the next event (the bug a
buffered pipe plus select() had: the kernel-tier trace test saw only the first line)."""

from __future__ import annotations

import os

from labkit.features.handshake.cli import LineReader, render


def test_lines_arriving_together_are_all_returned_without_waiting() -> None:
    r, w = os.pipe()
    try:
        reader = LineReader(r)
        os.write(w, b'{"event": "ready"}\n{"event": "accept"}\n{"event": "do')
        assert reader.next(5) == '{"event": "ready"}'
        assert reader.next(0) == '{"event": "accept"}'  # already read: no wait, no select
        assert reader.next(0) is None  # half a line is not a line
        os.write(w, b'ne"}\n')
        assert reader.next(5) == '{"event": "done"}'
    finally:
        os.close(w)
    assert reader.next(5) is None  # the writer is gone: end of stream
    os.close(r)


def test_render_names_what_the_kernel_asked_and_what_the_daemon_answered() -> None:
    ready = render({"time": 0, "node": "h", "event": "ready", "count": 2, "stalled": True})
    assert "READY" in ready and "2 request(s)" in ready and "stalled" in ready
    done = render({"time": 0, "node": "t", "event": "done", "fd": 7, "status": 71,
                   "errno": "EPROTO", "ms": 12.0, "reason": "not a ClientHello"})
    assert "EPROTO" in done and "not a ClientHello" in done
