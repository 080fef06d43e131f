"""The shared frame clock: every call's due frames per tick, marks, clear, slow sockets.

No real time here: the clock runs on a fake time function and the tests call `tick()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ivr.audio.clock import FrameClock
from ivr.audio.player import Player, Prompt
from ivr.telephony.outbound import OutMark, OutMedia, TwilioOutbound, Writer, parse_outbound

STEP = 0.020


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def at_tick(self, k: int) -> float:
        # Multiplied, not summed: the fake time is exact at each tick.
        self.t = 100.0 + k * STEP
        return self.t


class Line:
    """One call's port: encodes frames as their index, records what went out per tick."""

    def __init__(self, clock: FakeTime) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str, str]] = []

    def encode(self, ulaw: bytes) -> list[str]:
        return [ulaw[i:i + 160].hex() for i in range(0, len(ulaw), 160)]

    def media(self, piece: str) -> None:
        self.sent.append((self.clock(), "media", piece))

    def mark(self, name: str) -> None:
        self.sent.append((self.clock(), "mark", name))

    def clear(self) -> None:
        self.sent.append((self.clock(), "clear", ""))

    def media_times(self) -> list[float]:
        return [t for t, event, _ in self.sent if event == "media"]


def frames(n: int) -> list[str]:
    return [f"frame-{i}" for i in range(n)]


def test_frames_go_out_when_due_across_many_calls() -> None:
    """300 calls starting at staggered ticks: each sends `lead` ahead at its start, then
    one frame per tick, never more than `lead` ahead of real time."""
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)
    lead = 0.060  # 3 frames ahead
    calls = [(Line(time), i % 7) for i in range(300)]  # (line, the tick it starts at)
    channels = [clock.channel(line, lead=lead) for line, _ in calls]
    for k in range(40):
        now = time.at_tick(k)
        for (_, start), channel in zip(calls, channels, strict=True):
            if start == k:
                channel.frames(Prompt("p", "x"), frames(25))
        clock.tick(now)
        for line, start in calls:
            if k >= start:
                # Due by now: frames whose playing starts no later than now + lead.
                assert len(line.media_times()) == min(25, k - start + 1 + 3), (k, start)
    for (line, _), channel in zip(calls, channels, strict=True):
        times = line.media_times()
        assert times[:4] == [times[0]] * 4  # the lead, at once
        assert [round((t - times[0]) / STEP) for t in times[4:]] == list(range(1, 22))
        assert channel.frames_sent == 25 and channel.late_frames == 0
        assert not channel.queued
    assert clock.channels == 0  # every call drained: the clock would stop


def test_a_late_tick_catches_up_within_the_lead_and_a_dry_buffer_counts_late() -> None:
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)
    line = Line(time)
    channel = clock.channel(line, lead=0.040)
    prompt = Prompt("p", "x")
    channel.frames(prompt, frames(30))
    assert len(line.media_times()) == 3  # at once: now, +20, +40 ms
    clock.tick(time.at_tick(1))
    assert len(line.media_times()) == 4
    clock.tick(time.at_tick(3))  # a tick late by one period: catches up, no further
    assert len(line.media_times()) == 6
    assert channel.buffer_end <= time() + 0.040 + STEP
    assert prompt.late_frames == 0
    clock.tick(time.at_tick(10))  # the loop stalled 140 ms: the buffer ran dry
    assert prompt.late_frames == 1 and channel.late_frames == 1
    assert len(line.media_times()) == 9  # restarted from now: the lead again, no burst
    assert prompt.frames == 9 and prompt.first_frame_at == 100.0


async def play_all(player: Player, prompt: Prompt, nbytes: int) -> Prompt:
    async def audio() -> AsyncIterator[bytes]:
        yield b"\x7f" * nbytes

    return await player.play(prompt, audio())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_mark_follows_each_prompts_last_frame() -> None:
    """Two prompts queued back to back: each one's mark goes in the tick of its last
    frame, right after it, and `play` returns once its mark is out."""
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)
    line = Line(time)
    player = Player(line, lead=0.020, frames=clock)
    first, second = player.new_prompt("one"), player.new_prompt("two")
    t1 = asyncio.create_task(play_all(player, first, 160 * 5))
    await settle()
    t2 = asyncio.create_task(play_all(player, second, 160 * 3 + 10))  # 4 frames, padded
    await settle()
    assert not t1.done() and first.state == "playing"
    k = 0
    while not t2.done():
        k += 1
        assert k < 50
        clock.tick(time.at_tick(k))
        await settle()
    assert t1.done() and first.state == "sent" and second.state == "sent"
    events = [event if event != "mark" else name for _, event, name in line.sent]
    assert events == ["media"] * 5 + [first.name] + ["media"] * 4 + [second.name]
    media_at = line.media_times()
    marks_at = [t for t, event, _ in line.sent if event == "mark"]
    assert marks_at == [media_at[4], media_at[8]]  # same tick as the prompt's last frame
    assert player.frames_sent == 9 and first.frames == 5 and second.frames == 4
    assert player.on_mark(first.name) is first and first.state == "played"


async def test_clear_stops_a_calls_frames_at_once() -> None:
    """Barge-in on one call: no frame of it follows the clear, the other call goes on."""
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)
    lines = [Line(time), Line(time)]
    players = [Player(line, lead=0.040, frames=clock) for line in lines]
    prompts = [p.new_prompt("long") for p in players]
    tasks = [asyncio.create_task(play_all(p, prompt, 160 * 100))
             for p, prompt in zip(players, prompts, strict=True)]
    await settle()
    for k in range(1, 6):
        clock.tick(time.at_tick(k))
    assert [len(line.media_times()) for line in lines] == [8, 8]
    # As the speaker does it: stop at once, cancel the play, clear.
    players[0].stop()
    tasks[0].cancel()
    clock.tick(time.at_tick(6))  # a tick before the play task even saw its cancel
    cut = await players[0].clear()
    await asyncio.wait({tasks[0]})
    for k in range(7, 12):
        clock.tick(time.at_tick(k))
    assert cut == [prompts[0]] and prompts[0].state == "interrupted"
    assert 0 < prompts[0].heard_ms < prompts[0].duration_ms
    assert [event for _, event, _ in lines[0].sent] == ["media"] * 8 + ["clear"]
    assert len(lines[1].media_times()) == 14 and not tasks[1].done()
    tasks[1].cancel()
    await asyncio.wait({tasks[1]})


async def test_a_slow_socket_does_not_delay_other_calls() -> None:
    """One call's socket stops taking writes (its send waits on the transport forever):
    the tick still writes every other call's frames, in that same tick, in order."""
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)
    stuck = asyncio.get_running_loop().create_future()
    received: dict[str, list[str]] = {}

    def socket(name: str, *, slow_after: int | None = None) -> Writer:
        got = received.setdefault(name, [])

        async def send(text: str) -> None:
            if slow_after is not None and len(got) >= slow_after:
                await stuck  # the transport's buffer is full and stays full
            got.append(text)

        return Writer(send)

    names = [f"MZ{i:032x}" for i in range(20)]
    writers = {name: socket(name, slow_after=2 if name == names[0] else None)
               for name in names}
    channels = [clock.channel(TwilioOutbound(writers[name], name), lead=0.020)
                for name in names]
    pieces = TwilioOutbound(writers[names[1]], names[1]).encode(b"\x55" * 160 * 10)
    for channel in channels:
        channel.frames(Prompt("p", "x"), pieces)
        channel.mark("prompt-1", lambda: None)
    for k in range(1, 12):
        clock.tick(time.at_tick(k))
    for name in names[1:]:
        sent = [parse_outbound(text) for text in received[name]]
        assert [type(m) for m in sent] == [OutMedia] * 10 + [OutMark]
        assert all(m.stream_sid == name for m in sent)
    assert len(received[names[0]]) == 2
    assert writers[names[0]].waiting == 9  # the stuck frame; 7 more and the mark behind it
    assert all(not c.queued for c in channels)  # the clock is done with every call
    stuck.set_result(None)
    async with asyncio.timeout(5):
        await writers[names[0]].drained()
    assert writers[names[0]].waiting == 0
    assert [type(parse_outbound(t)) for t in received[names[0]]] == [OutMedia] * 10 + [OutMark]


def test_a_failing_call_does_not_stop_the_tick_for_the_others() -> None:
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)

    class Broken(Line):
        def media(self, piece: str) -> None:
            if len(self.sent) >= 2:
                raise RuntimeError("boom")
            super().media(piece)

    broken, fine = Broken(time), Line(time)
    for line in (broken, fine):
        clock.channel(line, lead=0.0).frames(Prompt("p", "x"), frames(10))
    for k in range(1, 10):
        clock.tick(time.at_tick(k))
    assert len(broken.media_times()) == 2 and len(fine.media_times()) == 10
    assert clock.channels == 0


def test_audio_queued_from_a_marks_callback_keeps_the_pace() -> None:
    """A mark's callback that queues the next prompt at once (inside the pump) does not
    start a second pump on a stale estimate: the next prompt follows at one frame per
    tick, no burst beyond the lead."""
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)
    line = Line(time)
    channel = clock.channel(line, lead=0.060)

    def next_prompt() -> None:
        channel.frames(Prompt("b", "x"), frames(10))

    channel.frames(Prompt("a", "x"), frames(5))
    channel.mark("a", next_prompt)
    for k in range(1, 30):
        clock.tick(time.at_tick(k))
    times = line.media_times()
    assert len(times) == 15
    for i, t in enumerate(times):
        # Never more than the lead (3 frames) ahead of one frame per tick from the start.
        assert t >= 100.0 + (i - 3) * STEP - 1e-9, (i, t)


def test_a_sink_that_ends_the_call_stops_the_pump_at_once() -> None:
    """The call ends inside a write (its socket broke): nothing more goes out."""
    time = FakeTime()
    clock = FrameClock(now=time, autostart=False)

    class Ending(Line):
        channel: object = None

        def media(self, piece: str) -> None:
            super().media(piece)
            if len(self.sent) == 2:
                self.channel.drop()  # type: ignore[attr-defined]

    line = Ending(time)
    line.channel = channel = clock.channel(line, lead=0.0)
    channel.frames(Prompt("p", "x"), frames(10))
    channel.mark("p", lambda: None)
    for k in range(1, 20):
        clock.tick(time.at_tick(k))
    assert [e for _, e, _ in line.sent] == ["media", "media"]
    assert not channel.queued and clock.channels == 0


def test_each_event_loop_has_its_own_clock() -> None:
    """A clock writes only its own loop's sockets: two loops (a server in a thread beside
    a test's own) never share one."""
    from ivr.audio.clock import shared_clock

    async def get() -> FrameClock:
        first = shared_clock()
        assert shared_clock() is first  # one per loop
        return first

    a, b = asyncio.run(get()), asyncio.run(get())
    assert a is not b
