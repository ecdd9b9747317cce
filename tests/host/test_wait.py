"""labkit.base.wait on a fake clock: a costly condition is asked less often (the CPU a long
wait spends asking stays bounded in a TCG guest), a cheap one every interval, and the
deadline holds either way."""

from __future__ import annotations

import pytest

from labkit.base import wait


class Clock:
    """time.monotonic and time.sleep of the wait module, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(wait, "time", c)
    return c


def asker(clock: Clock, cost: float, true_at: float | None = None):  # type: ignore[no-untyped-def]
    calls = []

    def condition() -> bool:
        calls.append(clock.now)
        clock.now += cost
        return true_at is not None and clock.now >= true_at

    return condition, calls


def test_a_costly_condition_is_asked_at_most_a_quarter_of_the_time(clock: Clock) -> None:
    condition, calls = asker(clock, cost=0.2)
    assert wait.poll(condition, 10.0, interval=0.05) is False
    busy = 0.2 * len(calls)
    assert busy <= 10.0 / (1 + wait.DUTY) + 2 * 0.2, (len(calls), clock.sleeps[:3])  # ends
    assert all(s == pytest.approx(0.6) for s in clock.sleeps[:-1])


def test_a_cheap_condition_is_asked_every_interval(clock: Clock) -> None:
    condition, calls = asker(clock, cost=0.001)
    assert wait.poll(condition, 1.0, interval=0.05) is False
    assert all(s == pytest.approx(0.05) for s in clock.sleeps[:-1])
    assert len(calls) >= 19  # the control: asking less often is the costly case only


def test_the_deadline_holds_and_names_what(clock: Clock) -> None:
    condition, _ = asker(clock, cost=0.2)
    with pytest.raises(wait.Timeout, match="waiting for the thing"):
        wait.wait_until(condition, 3.0, "the thing")
    assert clock.now <= 3.0 + 0.2  # no sleep past the deadline, one last ask at most
    done, _ = asker(clock, cost=0.2, true_at=clock.now + 1.0)
    assert wait.wait_until(done, 30.0, "it") is True


def test_a_very_costly_condition_still_ends_its_wait_within_max_pause(clock: Clock) -> None:
    condition, _ = asker(clock, cost=2.0)
    wait.poll(condition, 10.0, interval=0.05)
    assert max(clock.sleeps) <= wait.MAX_PAUSE
