"""The callers of `ivr bench load`: what each simulated Twilio call sends, when, and what
it measured. Pure: no sockets and no clock (every time is passed in), so the timing logic
is tested without timing anything; `ivr.bench.load` does the I/O.

A caller behaves as Twilio and a person do: a media frame every 20 ms (silence, so the
flow's prompts play and its timers run), each mark echoed when the audio sent before it
would have finished playing, and, once everything sent has played (the greeting, then
each reply, has been heard), a key pressed a moment later: the figure is the time from
that `dtmf` to the first frame of the reply. The keys (`KEYS`) walk the default flow
(flows/main_menu.yaml) along replies that keep the call going: "9" is no choice of the
main menu, so it answers "Sorry, I didn't get that ..." and asks again; "1" goes to the
dental booking menu, and there again "9", "9", "1" to its service question, whose two
"9"s are answered with reprompts. A third "9" would put the call through to a person
(ending the stream), so the last key is followed by no more: the call then stays on the
service question (no-input reprompts) well past any run's --seconds.

The generator must stay cheap enough to drive 1,000 calls from one core: a call's media
messages differ only in their numbers, so they are filled into string templates built
once per call (`Templates`), and every outgoing message goes through a plain
synchronous `send`: `ivr.bench.load` speaks the WebSocket itself (`text_frame`,
`read_frames`), a frame written and the server's frames handled as they arrive, with no
task woken per message.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ivr.errors import IvrError
from ivr.telephony import inbound, wire

CALLED = "+15550100002"  # the number every call dials: main_menu (flows/routes.yaml)
TICK = 0.020  # Twilio's media frame interval
SILENCE = b"\xff" * 160  # 20 ms of µ-law silence
AUDIBLE_GAP = 0.040  # a frame this late after the previous one in a prompt is heard
KEYS = "99199199"  # see the module docstring: reprompts and menus, never the transfer
PRESS_AFTER = (0.2, 1.2)  # seconds after the last prompt was heard: spread over ticks
REPLY_TIMEOUT = 5.0  # a key with no reply frame this long after it is counted unanswered


class Templates:
    """A call's inbound media messages with only the numbers left to fill in: the exact
    text `inbound.inbound_media_message` builds (Twilio's format), at a fraction of the
    cost (no dict, no `json.dumps`, the payload encoded once)."""

    def __init__(self, stream_sid: str, payload: bytes = SILENCE) -> None:
        self._head = '{"event":"media","sequenceNumber":"'
        sid = wire.dump({"streamSid": wire.check_sid(stream_sid)})[1:-1]  # JSON-quoted
        self._chunk = f'",{sid},"media":{{"track":"inbound","chunk":"'
        self._tail = f'","payload":"{wire.b64(payload)}"}}}}'

    def media(self, seq: int, chunk: int) -> str:
        """Frame `chunk` (1-based), its timestamp 20 ms per chunk as Twilio counts."""
        return f'{self._head}{seq}{self._chunk}{chunk}","timestamp":"{chunk * 20}{self._tail}'


def text_frame(data: bytes) -> bytes:
    """A client's WebSocket text frame (RFC 6455 5.2): final, masked as a client's must
    be, with the all-zero key, one of the keys a client may draw: the payload then goes
    out as it is (XOR with zeros), while the server still unmasks every frame as it does
    Twilio's."""
    n = len(data)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0xFE, n >> 8, n & 0xFF))
    else:
        head = bytes((0x81, 0xFF)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + data


def read_frames(buf: bytes, on_frame: Callable[[int, bytes], Any]) -> int:
    """Hand each whole frame at the start of `buf` (a server's: unmasked) to
    `on_frame(opcode, payload)`; returns the bytes used (the rest is a partial frame).
    A fragmented message is refused: no server of this benchmark sends one."""
    pos, end = 0, len(buf)
    while end - pos >= 2:
        first, length = buf[pos], buf[pos + 1] & 0x7F
        head = 2
        if length == 126:
            head = 4
            if end - pos < head:
                break
            length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        elif length == 127:
            head = 10
            if end - pos < head:
                break
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
        if buf[pos + 1] & 0x80 or not first & 0x80:
            raise IvrError("a masked or fragmented frame from the server")
        if end - pos < head + length:
            break
        on_frame(first & 0x0F, buf[pos + head:pos + head + length])
        pos += head + length
    return pos


@dataclass(eq=False)
class Caller:
    """One simulated call, seen from the caller's side."""

    sid: str
    started: float  # when `start` was sent
    send: Callable[[str], Any]  # writes one message (synchronously)
    rng: random.Random
    keys: str = KEYS
    templates: Templates = field(init=False)
    seq: int = 1  # `start` was 1
    chunk: int = 0
    ended: float | None = None  # the stream closed (or a write failed)
    # outbound audio
    first_in: float | None = None
    frames_in: int = 0
    last_in: float = 0.0
    in_prompt: bool = False  # frames came since the last mark: a silence now is a gap
    max_gap: float = 0.0  # the longest wait between two frames inside a prompt
    max_dry: float = 0.0  # the longest silence heard inside a prompt (buffer ran dry)
    buffered_until: float = 0.0  # when what was received will have played
    marks: list[tuple[float, str]] = field(default_factory=list)  # (echo at, name)
    # keys
    pressed: int = 0  # keys sent so far (an index into `keys`)
    press_at: float | None = None  # the next key is due then
    pressed_at: float | None = None  # a key was sent then and no reply frame came yet
    replies: list[float] = field(default_factory=list)  # key -> first reply frame, s
    unanswered: int = 0

    def __post_init__(self) -> None:
        self.templates = Templates(self.sid)

    # ------------------------------------------------------------- from the server

    def media_in(self, now: float, seconds: float) -> None:
        """An outbound frame of `seconds` of audio arrived at `now`."""
        if self.in_prompt:
            self.max_gap = max(self.max_gap, now - self.last_in)
            # What the caller hears: the far end's buffer (the lead) ran dry before this.
            self.max_dry = max(self.max_dry, now - self.buffered_until)
        if self.first_in is None:
            self.first_in = now
        if self.pressed_at is not None:
            self.replies.append(now - self.pressed_at)
            self.pressed_at = None
        self.press_at = None  # a prompt (a reprompt) is playing: press after it
        self.in_prompt = True
        self.frames_in += 1
        self.last_in = now
        self.buffered_until = max(self.buffered_until, now) + seconds

    def mark_in(self, now: float, name: str) -> None:
        """A mark: echoed once the audio before it has played."""
        self.marks.append((max(self.buffered_until, now), name))
        self.in_prompt = False  # the pause before the next prompt is no gap

    def clear_in(self, now: float) -> None:
        """`clear`: the buffered audio is dropped, so pending marks come back at once."""
        self.buffered_until = now
        self.marks = [(now, name) for _, name in self.marks]
        self.in_prompt = False

    # ------------------------------------------------------------- every tick

    def tick(self, now: float) -> None:
        """Send what is due at `now`: this tick's media frame, the marks whose audio has
        played, and a key when everything sent has been heard and its moment has come."""
        self.seq += 1
        self.chunk += 1
        self.send(self.templates.media(self.seq, self.chunk))
        marks = self.marks
        while marks and marks[0][0] <= now:
            self.seq += 1
            self.send(inbound.inbound_mark_message(self.seq, self.sid, marks.pop(0)[1]))
        if self.pressed_at is not None:
            if now - self.pressed_at >= REPLY_TIMEOUT:
                self.unanswered += 1
                self.pressed_at = None
            return
        if marks or self.in_prompt or self.first_in is None or self.pressed >= len(self.keys):
            return  # not heard everything yet (or no keys left)
        if self.press_at is None:
            self.press_at = now + self.rng.uniform(*PRESS_AFTER)
        elif now >= self.press_at:
            self.seq += 1
            self.send(inbound.dtmf_message(self.seq, self.sid, self.keys[self.pressed]))
            self.pressed += 1
            self.press_at = None
            self.pressed_at = now


# ----------------------------------------------------------------- figures


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not ordered:
        return math.nan
    rank = math.ceil(len(ordered) * p / 100)
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


@dataclass
class Figures:
    """What one run against one server measured (`--json` writes these)."""

    server: str
    calls: int
    seconds: float  # the steady window (all calls placed)
    cpu_ms_per_call_s: float  # the server's CPU per call-second
    frames_per_call_s: float  # outbound frames received
    gap_calls: int  # calls with a wait >= 40 ms between two frames inside a prompt
    worst_gap_ms: float
    heard_calls: int  # calls whose far-end buffer ran dry >= 40 ms mid-prompt
    worst_heard_ms: float
    greeted: int
    greeting_p50_ms: float
    greeting_p99_ms: float
    presses: int
    replies: int
    dtmf_p50_ms: float
    dtmf_p99_ms: float
    rss_kib_per_call: float
    loop_lag_p99_ms: float | None  # from /metrics (the baseline has none)
    ended_early: int  # streams the server closed before the run ended
    late_ticks: int  # generator ticks that began late, of `ticks`
    ticks: int
    generator_cpu_ms_per_call_s: float
    generator_sys_ms_per_call_s: float  # of which in the kernel (loopback TCP, mostly)
    counters: dict[str, Any] = field(default_factory=dict)


def measure(server: str, callers: Sequence[Caller], *, seconds: float, cpu_s: float,
            rss_kib: float, loop_lag_ms: float | None, late_ticks: int, ticks: int,
            generator_cpu_s: float, generator_sys_s: float, until: float) -> Figures:
    """The figures of a run from its callers and the counters read around it; `until`
    is when the run ended (streams closed after it were closed by the generator)."""
    n = len(callers)
    call_s = max(n * seconds, 1e-9)
    greet = sorted((c.first_in - c.started) * 1000 for c in callers if c.first_in is not None)
    replies = sorted(r * 1000 for c in callers for r in c.replies)
    return Figures(
        server=server, calls=n, seconds=seconds,
        cpu_ms_per_call_s=cpu_s / call_s * 1000,
        frames_per_call_s=sum(c.frames_in for c in callers) / call_s,
        gap_calls=sum(c.max_gap >= AUDIBLE_GAP for c in callers),
        worst_gap_ms=max((c.max_gap for c in callers), default=0.0) * 1000,
        heard_calls=sum(c.max_dry >= AUDIBLE_GAP for c in callers),
        worst_heard_ms=max((max(0.0, c.max_dry) for c in callers), default=0.0) * 1000,
        greeted=len(greet),
        greeting_p50_ms=percentile(greet, 50), greeting_p99_ms=percentile(greet, 99),
        presses=sum(c.pressed for c in callers), replies=len(replies),
        dtmf_p50_ms=percentile(replies, 50), dtmf_p99_ms=percentile(replies, 99),
        rss_kib_per_call=rss_kib / max(n, 1), loop_lag_p99_ms=loop_lag_ms,
        ended_early=sum(c.ended is not None and c.ended <= until for c in callers),
        late_ticks=late_ticks, ticks=ticks,
        generator_cpu_ms_per_call_s=generator_cpu_s / call_s * 1000,
        generator_sys_ms_per_call_s=generator_sys_s / call_s * 1000,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f} ms"


def table(runs: Sequence[Figures]) -> list[str]:
    """The summary the benchmark ends with: one column per server, then the ratio."""
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("calls", lambda f: str(f.calls)),
        ("calls with a gap >= 40 ms (arrival)", lambda f: f"{f.gap_calls}"),
        ("calls hearing a silence >= 40 ms", lambda f: f"{f.heard_calls}"),
        ("greeting first frame p99", lambda f: _ms(f.greeting_p99_ms)),
        ("DTMF reply p99", lambda f: _ms(f.dtmf_p99_ms)),
        ("server CPU ms per call-second", lambda f: f"{f.cpu_ms_per_call_s:.2f}"),
        ("RSS KiB per call", lambda f: f"{f.rss_kib_per_call:.0f}"),
        ("event-loop lag p99", lambda f: _ms(f.loop_lag_p99_ms)),
        ("generator late ticks", lambda f: f"{f.late_ticks}/{f.ticks}"),
        ("generator CPU ms per call-second", lambda f: f"{f.generator_cpu_ms_per_call_s:.2f}"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':{width}}  " + "".join(f"{f.server:>14}" for f in runs)]
    for label, cell in rows:
        lines.append(f"{label:{width}}  " + "".join(f"{cell(f):>14}" for f in runs))
    if len(runs) == 2 and runs[1].cpu_ms_per_call_s > 0:
        ratio = runs[0].cpu_ms_per_call_s / runs[1].cpu_ms_per_call_s
        lines.append(f"{'CPU ratio ' + runs[0].server + ' / ' + runs[1].server:{width}}  "
                     f"{ratio:>14.2f}")
    return lines
