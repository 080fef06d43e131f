"""The limits of one media connection (`telephony.limits`), on a fake clock."""

from __future__ import annotations

import pytest

from ivr.config import Settings
from ivr.errors import ConfigError
from ivr.telephony.limits import MediaLimits, StreamGuard

FRAME = 160  # bytes of µ-law in a 20 ms frame


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def started_guard(limits: MediaLimits | None = None) -> tuple[StreamGuard, Clock]:
    clock = Clock()
    guard = StreamGuard(limits or MediaLimits(), clock)
    guard.received()
    guard.started()
    return guard, clock


def frame(guard: StreamGuard) -> bool:
    guard.received()
    return guard.floods(FRAME)


def test_three_seconds_of_audio_at_once_is_allowed_and_one_frame_more_is_a_flood() -> None:
    guard, _ = started_guard()
    assert not any(frame(guard) for _ in range(150))  # 150 x 20 ms = 3 s, in no time
    assert frame(guard)
    assert guard.ahead_ms() == pytest.approx(3020)


def test_real_time_audio_through_network_stalls_never_floods() -> None:
    """Ten minutes of audio sent in real time, received through a network that holds
    the start and the first 2.5 s back, then stalls 2 s every minute: each stall ends in
    a burst, and the audio never runs the full 3 s ahead."""
    clock = Clock()
    guard = StreamGuard(MediaLimits(), clock)
    sent = clock.now  # when Twilio sent `start`; frame k leaves at sent + k * 20 ms

    def arrives(k: int) -> float:
        t = sent + k * 0.020
        if t < sent + 2.5:
            return sent + 2.5  # held back with the start
        minute = (t - sent) // 60
        stall_end = sent + minute * 60 + 60
        return stall_end if t > stall_end - 2.0 else t  # the last 2 s of each minute

    clock.now = arrives(0)
    guard.received()
    guard.started()
    worst = 0.0
    for k in range(1, 30_001):
        clock.now = arrives(k)
        assert not frame(guard), k
        worst = max(worst, guard.ahead_ms())
    assert 2400 < worst < 2600  # the held-back start: the most a line can run ahead


def test_flood_is_measured_from_start_not_from_the_upgrade() -> None:
    clock = Clock()
    guard = StreamGuard(MediaLimits(), clock)
    clock.now += 9.0  # a slow start does not earn an allowance of audio
    guard.received()
    assert not guard.floods(FRAME * 10)  # before start: not counted
    guard.started()
    assert guard.audio_bytes == 0
    assert not any(frame(guard) for _ in range(150))
    assert frame(guard)


def test_no_start_expires_after_the_start_timeout() -> None:
    clock = Clock()
    guard = StreamGuard(MediaLimits(start_timeout_ms=10_000), clock)
    clock.now += 9.999
    guard.received()  # frames that are not `start` do not count
    assert guard.expired() is None
    assert guard.until_deadline() == pytest.approx(0.001)
    clock.now += 0.001
    assert guard.expired() == "no_start"


def test_idle_expires_after_the_idle_timeout_since_the_last_frame() -> None:
    guard, clock = started_guard(MediaLimits(idle_timeout_ms=30_000))
    clock.now += 29.0
    assert not frame(guard)
    clock.now += 29.999
    assert guard.expired() is None
    clock.now += 0.001
    assert guard.expired() == "idle"
    assert guard.until_deadline() == 0.0


def test_limits_come_from_the_environment_with_the_issue_defaults() -> None:
    assert MediaLimits.from_settings(Settings.from_env({})) == MediaLimits(
        max_message_bytes=16 * 1024, flood_ms=3000, start_timeout_ms=10_000,
        idle_timeout_ms=30_000,
    )
    env = {"IVR_MEDIA_MAX_MESSAGE_BYTES": "4096", "IVR_MEDIA_FLOOD_MS": "500",
           "IVR_MEDIA_START_TIMEOUT_MS": "200", "IVR_MEDIA_IDLE_TIMEOUT_MS": "300"}
    assert MediaLimits.from_settings(Settings.from_env(env)) == MediaLimits(4096, 500, 200, 300)


@pytest.mark.parametrize("var, value", [
    ("IVR_MEDIA_MAX_MESSAGE_BYTES", "512"),
    ("IVR_MEDIA_FLOOD_MS", "0"),
    ("IVR_MEDIA_START_TIMEOUT_MS", "-1"),
    ("IVR_MEDIA_IDLE_TIMEOUT_MS", "0"),
])
def test_limits_out_of_range_are_refused_at_start(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: value})
