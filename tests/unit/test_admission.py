"""The admission decision and the loop-lag probe's p99, with an injected clock."""

from __future__ import annotations

import asyncio
import time
from typing import get_args
from xml.etree import ElementTree

import pytest

from ivr.analytics.metrics import REFUSAL_DOORS, REFUSAL_REASONS
from ivr.config import Settings
from ivr.errors import ConfigError
from ivr.server.admission import Admission, Door, LoopLag, RefusalReason
from ivr.server.services import Services
from ivr.telephony.twiml import busy_twiml


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def probed(lags_ms: list[float], *, clock: Clock | None = None) -> LoopLag:
    """A probe that recorded `lags_ms`, one every 20 ms."""
    clock = clock or Clock()
    lag = LoopLag(clock=clock)
    for ms in lags_ms:
        clock.now += 0.020
        lag.record(ms / 1000)
    return lag


def test_two_stalls_in_a_full_window_are_under_the_p99() -> None:
    lag = probed([1.0] * 248 + [200.0, 200.0])
    assert lag.p99_ms() == pytest.approx(1.0)


def test_three_stalls_in_a_full_window_are_its_p99() -> None:
    lag = probed([1.0] * 247 + [90.0, 200.0, 200.0])
    assert lag.p99_ms() == pytest.approx(90.0)


def test_a_process_just_started_is_not_judged_by_its_first_stall() -> None:
    """Missing probes of a window not yet full count as on time."""
    assert probed([300.0]).p99_ms() == 0.0
    assert probed([300.0, 300.0, 300.0]).p99_ms() == pytest.approx(300.0)


def test_a_sustained_lag_is_the_p99_though_it_slows_the_probe() -> None:
    """A loop late by 100 ms on every wake-up probes fewer times: still its p99."""
    clock = Clock()
    lag = LoopLag(clock=clock)
    for _ in range(40):
        clock.now += 0.120
        lag.record(0.100)
    assert lag.p99_ms() == pytest.approx(100.0)


def test_stalls_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    lag = probed([200.0] * 10, clock=clock)
    assert lag.p99_ms() == pytest.approx(200.0)
    clock.now += 5.1
    assert lag.p99_ms() == 0.0
    lag.record(0.001)
    assert lag.p99_ms() == 0.0


class Watched(LoopLag):
    """The probe, telling the test each time it records."""

    def __init__(self) -> None:
        super().__init__(probe_s=0.005)
        self.recorded = asyncio.Event()
        self.lags: list[float] = []

    def record(self, lag_s: float) -> None:
        super().record(lag_s)
        self.lags.append(lag_s)
        self.recorded.set()


async def test_the_probe_records_how_late_the_loop_woke_it() -> None:
    """A loop kept busy for 60 ms wakes the probe at least ~40 ms late."""
    lag = Watched()
    task = asyncio.create_task(lag.run())
    try:
        async with asyncio.timeout(5):
            await lag.recorded.wait()
            lag.recorded.clear()
            end = time.monotonic() + 0.060
            while time.monotonic() < end:  # the stall under test: slow code on the loop
                pass
            await lag.recorded.wait()
    finally:
        task.cancel()
    assert lag.lags[-1] >= 0.040


class FixedLag:
    def __init__(self, ms: float) -> None:
        self.ms = ms

    def p99_ms(self) -> float:
        return self.ms


def admission(live: int, *, lag_ms: float = 0.0, draining: bool = False,
              **settings: object) -> Admission:
    services = Services(settings=Settings(**{"max_calls": 2, **settings}))  # type: ignore[arg-type]
    services.draining = draining
    a = Admission(services, FixedLag(lag_ms))
    for _ in range(live):
        a.open_stream()
    return a


def test_the_decision() -> None:
    assert admission(1).refusal() is None
    assert admission(2).refusal() == "cap"
    assert admission(0, lag_ms=50.1).refusal() == "lag"
    assert admission(0, lag_ms=50.0).refusal() is None
    assert admission(0, draining=True).refusal() == "draining"
    # Draining says the most: the process is going away whatever its load.
    assert admission(5, lag_ms=99, draining=True).refusal() == "draining"


def test_zero_disables_the_cap_and_the_lag_limit() -> None:
    assert admission(10_000, max_calls=0).refusal() is None
    assert admission(0, lag_ms=10_000, max_loop_lag_ms=0).refusal() is None


def test_a_stream_slot_is_given_back_once() -> None:
    a = admission(0)
    slot = a.open_stream()
    assert a.live == 1
    slot.opened()
    slot.opened()
    assert a.live == 0


def test_refusal_labels_are_the_metric_labels() -> None:
    assert set(get_args(RefusalReason)) == set(REFUSAL_REASONS)
    assert set(get_args(Door)) == set(REFUSAL_DOORS)


def test_busy_twiml() -> None:
    reject = ElementTree.fromstring(busy_twiml("reject", "ignored"))
    assert [(el.tag, el.get("reason")) for el in reject] == [("Reject", "busy")]
    message = ElementTree.fromstring(busy_twiml("message", "Busy & sorry."))
    assert [(el.tag, el.text) for el in message] == [("Say", "Busy & sorry."), ("Hangup", None)]


def test_admission_settings() -> None:
    s = Settings.from_env({"IVR_MAX_CALLS": "2", "IVR_BUSY": "reject",
                           "IVR_MAX_LOOP_LAG_MS": "0", "IVR_BUSY_MESSAGE": "Later."})
    assert (s.max_calls, s.busy, s.max_loop_lag_ms, s.busy_message) == (2, "reject", 0, "Later.")
    assert (Settings().max_calls, Settings().max_loop_lag_ms, Settings().busy) == (
        400, 50, "message")
    for env in ({"IVR_MAX_CALLS": "-1"}, {"IVR_BUSY": "hangup"}, {"IVR_BUSY_MESSAGE": " "},
                {"IVR_MAX_LOOP_LAG_MS": "-5"}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
