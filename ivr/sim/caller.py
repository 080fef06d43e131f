"""The simulated caller: a phone call as Twilio would deliver it, for tests and demos.

`ivr call` and the end-to-end tests use this to call the server's `/media` WebSocket
without Twilio. It behaves the way Twilio does on the wire, because the point is to
find the server's bugs before Twilio does:

* inbound: `connected`, `start`, then one 20 ms `media` frame after another on an
  absolute clock (silence between utterances, as a real line carries), `dtmf` per
  digit, `mark` echoes, and `stop` when the caller hangs up;
* outbound: audio is played in real time from a buffer, a `mark` is echoed only once
  the audio before it has played (at once if nothing is buffered), and `clear` drops
  the buffer and echoes every pending mark immediately.

The caller takes turns like a patient person: it answers a prompt once the bot has gone
quiet, or barges in a set time after a prompt starts. Everything the server sent is
recorded with arrival times so tests can assert on pacing and barge-in latency, and what
the caller actually heard is transcribed with the embedded recognizer.

All times in a `CallTranscript` are `time.monotonic()` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import functools
import json
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import numpy as np

from ivr.audio.codec import (
    FRAME_BYTES,
    TELEPHONY_RATE,
    ULAW_SILENCE,
    Framer,
    ToUlaw8k,
    Upsampler,
    ulaw_to_pcm16,
)
from ivr.errors import InvalidValue, IvrError, ProtocolError
from ivr.speech.base import Recognizer, Synthesizer
from ivr.telephony import protocol

if TYPE_CHECKING:
    # Imported lazily at run time: the pool pulls in the worker machinery, which callers
    # that do not transcribe never need.
    from ivr.speech.sphinx.pool import RecognizerPool

__all__ = [
    "Action",
    "ActionArg",
    "Barge",
    "BotSaid",
    "CallTranscript",
    "CallerHungUp",
    "CallerPressed",
    "CallerSaid",
    "CallerSilent",
    "ClosedBy",
    "Dtmf",
    "Event",
    "Hangup",
    "MarkRecord",
    "PlaybackBuffer",
    "Say",
    "Silence",
    "SimulatedCaller",
    "fetch_server_transcript",
    "format_transcript",
    "http_base_url",
    "new_sid",
    "run_call",
    "transcribe_heard",
]

FRAME_SECONDS = 0.020
SILENT_FRAME = ULAW_SILENCE * FRAME_BYTES
# Twilio sends the digit event once the tone has ended; people press about this fast.
DTMF_INTERVAL = 0.150
# RMS (PCM16) above which a frame counts as voiced. Synthesized speech is far above it
# and digital silence is 0, so the exact value only matters for faint onsets.
VOICED_RMS = 200.0

ClosedBy: TypeAlias = Literal["server", "caller", "timeout"]


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Say:
    """Answer the current prompt by speaking `text`, once the prompt has finished."""

    text: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Answer the current prompt with DTMF digits, once the prompt has finished."""

    digits: str

    def __post_init__(self) -> None:
        bad = [d for d in self.digits if d not in protocol.DTMF_DIGITS]
        if not self.digits or bad:
            raise InvalidValue(f"DTMF digits must be 0-9 * # A-D, got {self.digits!r}")


@dataclass(frozen=True, slots=True)
class Barge:
    """Speak `text` `after_ms` after the next prompt's first audio arrives."""

    text: str
    after_ms: int = 500


@dataclass(frozen=True, slots=True)
class Silence:
    """Hear the prompt out, then say nothing for `ms` (to provoke no-input handling)."""

    ms: int


@dataclass(frozen=True, slots=True)
class Hangup:
    """Hang up: after the prompt finishes, or `after_ms` after it starts when given."""

    after_ms: int | None = None


Action: TypeAlias = Say | Dtmf | Barge | Silence | Hangup


class ActionArg(argparse.Action):
    """argparse action that keeps `--say` / `--dtmf` / ... in command-line order.

    Give every action option the same `dest` (e.g. ``dest="actions"``); plain
    ``action="append"`` per option would lose how the options were interleaved.
    Accepted option names: --say TEXT, --dtmf DIGITS, --barge MS:TEXT, --silence MS,
    --hangup [MS].
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        actions: list[Action] = list(getattr(namespace, self.dest, None) or [])
        value = values if isinstance(values, str) else None
        try:
            actions.append(_parse_action(option_string or "", value))
        except ValueError as exc:
            parser.error(f"{option_string}: {exc}")
        setattr(namespace, self.dest, actions)


def _parse_action(option: str, value: str | None) -> Action:
    name = option.lstrip("-")
    if name == "say" and value:
        return Say(value)
    if name == "dtmf" and value:
        return Dtmf(value)
    if name == "barge" and value:
        ms, sep, text = value.partition(":")
        if not sep or not ms.isdigit() or not text:
            raise InvalidValue("expected MS:TEXT, e.g. 800:operator")
        return Barge(text, int(ms))
    if name == "silence" and value and value.isdigit():
        return Silence(int(value))
    if name == "hangup":
        if value is None:
            return Hangup()
        if value.isdigit():
            return Hangup(int(value))
    raise InvalidValue(f"bad value {value!r}")


# --------------------------------------------------------------------------- record


@dataclass(slots=True)
class MarkRecord:
    """A mark the server sent, and when the caller echoed it back."""

    name: str
    t_received: float
    t_echoed: float | None = None
    cleared: bool = False
    """Echoed because of a `clear`, not because the audio before it played."""


@dataclass(slots=True)
class BotSaid:
    """One stretch of bot audio as the caller heard it (a prompt, or what was left of it)."""

    t_start: float
    t_end: float
    duration_s: float
    text: str | None = None
    """What the caller's recognizer heard; None when not transcribed."""
    mark: str | None = None
    """The mark that ended this stretch, if any."""
    cut_short: bool = False
    """Part of it never played: cleared, or the call ended first."""
    audio: bytes = field(default=b"", repr=False)
    """The µ-law that actually played."""


@dataclass(frozen=True, slots=True)
class CallerSaid:
    text: str
    t_start: float
    t_end: float
    onset: float | None
    barge: bool = False


@dataclass(frozen=True, slots=True)
class CallerPressed:
    digits: str
    t_start: float
    t_end: float


@dataclass(frozen=True, slots=True)
class CallerSilent:
    ms: int
    t_start: float
    t_end: float


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    t_start: float


Event: TypeAlias = BotSaid | CallerSaid | CallerPressed | CallerSilent | CallerHungUp


def _event_time(event: Event) -> float:
    return event.t_start


def _arrival(frame: tuple[float, int]) -> float:
    return frame[0]


@dataclass(slots=True)
class CallTranscript:
    """Everything that happened on one simulated call."""

    call_sid: str
    stream_sid: str
    account_sid: str
    flow: str | None
    t_start: float = 0.0
    """When `start` was sent: the origin of the caller's media timestamps."""
    t_end: float = 0.0
    closed_by: ClosedBy = "timeout"
    events: list[Event] = field(default_factory=list)
    frames: list[tuple[float, int]] = field(default_factory=list)
    """Each outbound `media` message: (arrival time, payload bytes)."""
    marks: list[MarkRecord] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    speech_onsets: list[float] = field(default_factory=list)
    media_sent: int = 0
    actions_done: int = 0
    errors: list[str] = field(default_factory=list)
    """Protocol violations by the server and the caller's own troubles, for humans."""
    server: dict[str, Any] | None = None
    """The server's record of the call (`GET /api/calls/{call_sid}`), when available."""

    @property
    def heard(self) -> list[BotSaid]:
        return [e for e in self.events if isinstance(e, BotSaid)]

    @property
    def duration_s(self) -> float:
        return max(0.0, self.t_end - self.t_start)

    def clear_latency(self, onset: float) -> float | None:
        """Seconds from a speech onset to the first `clear` after it (barge-in latency)."""
        later = [c for c in self.clears if c >= onset]
        return later[0] - onset if later else None


# --------------------------------------------------------------------------- playback


@dataclass(slots=True)
class _Run:
    """Audio that plays back to back, starting at `start`."""

    start: float
    nbytes: int

    @property
    def end(self) -> float:
        return self.start + self.nbytes / TELEPHONY_RATE


@dataclass(slots=True)
class _Segment:
    runs: list[_Run] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    mark: str | None = None
    cut_short: bool = False

    @property
    def start(self) -> float:
        return self.runs[0].start

    @property
    def end(self) -> float:
        return self.runs[-1].end

    def truncate(self, now: float) -> None:
        """Keep only what had played by `now`."""
        kept: list[_Run] = []
        for run in self.runs:
            if run.start >= now:
                break
            played = min(run.nbytes, int((now - run.start) * TELEPHONY_RATE))
            kept.append(_Run(run.start, played))
        total = sum(r.nbytes for r in kept)
        if total < len(self.audio):
            self.cut_short = True
            del self.audio[total:]
        self.runs = [r for r in kept if r.nbytes]


class PlaybackBuffer:
    """Twilio's outbound audio buffer, as far as the caller can observe it.

    Pure bookkeeping on times handed in by the caller (no clock, no I/O), so it can be
    tested without sockets. Audio plays in real time from when it arrives, queued behind
    what is already buffered; a mark is due when the audio queued before it has played.
    Played audio is grouped into segments (roughly, prompts): a segment ends at a mark,
    at a `clear`, or when playback has been idle for longer than `gap` seconds.
    """

    def __init__(self, *, gap: float = 0.4) -> None:
        self.gap = gap
        self.play_end = -math.inf
        """When everything buffered will have finished playing."""
        self.last_arrival = -math.inf
        self.marks: list[MarkRecord] = []
        self.segments: list[_Segment] = []
        self._open: _Segment | None = None
        self._pending: deque[tuple[float, MarkRecord]] = deque()

    def media(self, payload: bytes, now: float) -> None:
        self.last_arrival = now
        buffered = self.play_end > now
        start = self.play_end if buffered else now
        seg = self._open
        if seg is None or start - seg.end > self.gap:
            seg = self._open = _Segment()
            self.segments.append(seg)
        if buffered and seg.runs and seg.runs[-1].end == self.play_end:
            seg.runs[-1].nbytes += len(payload)
        else:
            seg.runs.append(_Run(start, len(payload)))
        seg.audio += payload
        self.play_end = seg.runs[-1].end

    def mark(self, name: str, now: float) -> MarkRecord | None:
        """Queue a mark; returns it if it is due at once (nothing buffered)."""
        record = MarkRecord(name, now)
        self.marks.append(record)
        if self._open is not None:
            self._open.mark = name
            self._open = None
        if self.play_end <= now:
            return record
        self._pending.append((self.play_end, record))
        return None

    def clear(self, now: float) -> list[MarkRecord]:
        """Drop unplayed audio; returns every pending mark, all due at once."""
        self._cut(now)
        released = [record for _, record in self._pending]
        self._pending.clear()
        for record in released:
            record.cleared = True
        return released

    def finish(self, now: float) -> None:
        """The call ended: audio still buffered was never heard; pending marks never echo."""
        self._cut(now)
        self._pending.clear()

    def _cut(self, now: float) -> None:
        for seg in reversed(self.segments):
            if seg.end <= now:
                break
            seg.truncate(now)
        self.segments = [s for s in self.segments if s.runs]
        self.play_end = min(self.play_end, now)
        self._open = None

    def due(self, now: float) -> list[MarkRecord]:
        """Pop the marks whose audio has played by `now`, in order."""
        out: list[MarkRecord] = []
        while self._pending and self._pending[0][0] <= now:
            out.append(self._pending.popleft()[1])
        return out

    def next_due(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    def idle(self, now: float) -> bool:
        """Nothing buffered and no mark waiting to be echoed."""
        return self.play_end <= now and not self._pending

    def quiet_for(self, now: float) -> float:
        """Seconds since the bot last made a sound or sent audio (0 while busy)."""
        if not self.idle(now):
            return 0.0
        return now - max(self.play_end, self.last_arrival)


# --------------------------------------------------------------------------- utterances


@dataclass(slots=True)
class _Utterance:
    """A synthesized utterance being sent, frame by frame, by the media clock."""

    text: str
    frames: list[bytes]
    barge: bool
    sent: int = 0
    t_start: float | None = None
    onset: float | None = None
    t_end: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _voiced(frame: bytes) -> bool:
    pcm = np.frombuffer(ulaw_to_pcm16(frame), dtype=np.int16).astype(np.float64)
    return bool(pcm.size) and float(np.sqrt(np.mean(pcm * pcm))) > VOICED_RMS


def _trim(frames: list[bytes]) -> list[bytes]:
    """Drop the synthesizer's leading and trailing silence.

    Leading silence would delay the onset a barge-in test measures from; trailing
    silence is supplied by the line anyway.
    """
    voiced = [i for i, f in enumerate(frames) if _voiced(f)]
    if not voiced:
        return frames
    return frames[voiced[0] : voiced[-1] + 1]


async def _synthesize(
    synth: Synthesizer, text: str, voice: str | None, rate: int | None, max_wait: float
) -> list[bytes]:
    framer = Framer()
    out: list[bytes] = []
    conv: ToUlaw8k | None = None
    async with asyncio.timeout(max_wait):
        async for pcm, sample_rate in synth.synthesize(text, voice=voice, rate=rate):
            if conv is None or conv.rate != sample_rate:
                if conv is not None:
                    out += framer.push(conv.flush())
                conv = ToUlaw8k(sample_rate)
            out += framer.push(conv.push(pcm))
    if conv is not None:
        out += framer.push(conv.flush())
    out += framer.flush(pad=True)
    return _trim(out)


# --------------------------------------------------------------------------- the caller


class _Closed(IvrError):
    """The WebSocket is gone; the conversation cannot go on."""


class SimulatedCaller:
    """One call to a `/media` WebSocket. Use once: `transcript = await caller.run()`."""

    def __init__(
        self,
        url: str,
        actions: Sequence[Action],
        *,
        flow: str | None = None,
        voice: str | None = "en-us",
        rate: int | None = None,
        from_number: str = "+15550100001",
        to_number: str = "+15550100002",
        quiet_ms: int = 700,
        segment_gap_ms: int = 400,
        prompt_timeout: float = 15.0,
        hangup_timeout: float = 20.0,
        call_timeout: float = 120.0,
        connect_timeout: float = 10.0,
        synth_timeout: float = 30.0,
        auth_token: str | None = None,
        signed_url: str | None = None,
        synthesizer: Synthesizer | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.actions = list(actions)
        self.voice = voice
        self.rate = rate
        self.quiet = quiet_ms / 1000
        self.prompt_timeout = prompt_timeout
        self.hangup_timeout = hangup_timeout
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.synth_timeout = synth_timeout
        self.auth_token = auth_token
        self.signed_url = signed_url
        self._synth = synthesizer
        self._session = session
        self.params: dict[str, str] = {}
        if flow is not None:
            self.params["flow"] = flow
        self.params["from"] = from_number
        self.params["to"] = to_number
        self.transcript = CallTranscript(
            call_sid=new_sid("CA"),
            stream_sid=new_sid("MZ"),
            account_sid=new_sid("AC"),
            flow=flow,
        )
        self.buffer = PlaybackBuffer(gap=segment_gap_ms / 1000)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._server_closed = False
        self._hanging_up = False
        self._t_closed: float | None = None
        self._marks_changed = asyncio.Event()
        self._speech: deque[_Utterance] = deque()
        self._utterances: dict[str, list[bytes]] = {}
        self._caller_events: list[Event] = []
        # Strong references to fire-and-forget echo tasks, which asyncio holds weakly.
        self._background: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- public

    async def run(self) -> CallTranscript:
        """Place the call and return its record; never raises for what the server does."""
        t = self.transcript
        await self._prepare()
        owns_session = self._session is None
        session = self._session or aiohttp.ClientSession()
        try:
            try:
                async with asyncio.timeout(self.call_timeout):
                    await self._call(session)
            except TimeoutError:
                t.closed_by = "timeout"
                t.errors.append(f"call timed out after {self.call_timeout:g} s")
            finally:
                await self._hang_up()
        finally:
            if owns_session:
                await session.close()
        t.t_end = time.monotonic()
        # What was still buffered when the line went dead was never heard.
        self.buffer.finish(self._t_closed or t.t_end)
        t.marks = self.buffer.marks
        heard: list[Event] = [
            BotSaid(
                t_start=s.start,
                t_end=s.end,
                duration_s=len(s.audio) / TELEPHONY_RATE,
                mark=s.mark,
                cut_short=s.cut_short,
                audio=bytes(s.audio),
            )
            for s in self.buffer.segments
        ]
        t.events = sorted(heard + self._caller_events, key=_event_time)
        return t

    # ----------------------------------------------------------------- setup

    async def _prepare(self) -> None:
        """Synthesize every utterance before dialling.

        Synthesis during the call would compete with the media clock for the CPU, and
        a barge-in must start on time, not after espeak has run.
        """
        texts = {a.text for a in self.actions if isinstance(a, Say | Barge)}
        if not texts:
            return
        synth = self._synth
        if synth is None:
            from ivr.speech.espeak import EspeakSynthesizer

            synth = EspeakSynthesizer()
        for text in sorted(texts):
            self._utterances[text] = await _synthesize(
                synth, text, self.voice, self.rate, self.synth_timeout
            )

    def _headers(self) -> dict[str, str]:
        if self.auth_token is None:
            return {}
        from twilio.request_validator import RequestValidator

        # Twilio signs the upgrade over the public wss:// URL with no parameters.
        signature = RequestValidator(self.auth_token).compute_signature(
            self.signed_url or self.url, {}
        )
        return {"X-Twilio-Signature": str(signature)}

    # ----------------------------------------------------------------- the call

    async def _call(self, session: aiohttp.ClientSession) -> None:
        t = self.transcript
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._ws = await session.ws_connect(
                    self.url,
                    headers=self._headers(),
                    autoclose=True,
                    autoping=True,
                    max_msg_size=protocol.DEFAULT_MAX_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise IvrError(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from exc
        # Connected and start go out before the reader runs: Twilio sends them first,
        # and nothing the server says can change them.
        await self._send(protocol.connected_message())
        await self._send(
            lambda seq: protocol.start_message(
                seq, t.stream_sid, t.account_sid, t.call_sid, self.params
            )
        )
        t.t_start = time.monotonic()
        tasks = [
            asyncio.create_task(self._read(), name="caller-read"),
            asyncio.create_task(self._media_clock(t.t_start), name="caller-clock"),
            asyncio.create_task(self._echo_marks(), name="caller-marks"),
        ]
        try:
            await self._converse()
        except _Closed:
            pass
        finally:
            self._hanging_up = True
            self._t_closed = self._t_closed or time.monotonic()
            for task in tasks[1:]:
                task.cancel()
            # The clock and echo tasks are stopped before `stop` goes out, so `stop` is
            # the last thing the caller sends, as with Twilio.
            await asyncio.wait(tasks[1:], timeout=2.0)
            if not self._server_closed:
                await self._send(
                    lambda seq: protocol.stop_message(seq, t.stream_sid, t.account_sid, t.call_sid)
                )
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._ws.close()
            tasks[0].cancel()
            await asyncio.wait([tasks[0], *self._background], timeout=2.0)

    async def _hang_up(self) -> None:
        """Last-resort close when `_call` was cut short by the call timeout."""
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await ws.close()

    async def _send(self, message: str | Callable[[int], str]) -> bool:
        """Send one frame: a finished one, or a builder given the next sequence number.

        Numbering and sending happen under one lock so sequence numbers reach the server
        in order even though the clock, the echo task and the conversation all send.
        Returns False (and ends the conversation) once the socket is gone.
        """
        ws = self._ws
        if ws is None or ws.closed:
            return False
        async with self._send_lock:
            if isinstance(message, str):
                text = message
            else:
                self._seq += 1
                text = message(self._seq)
            try:
                async with asyncio.timeout(5.0):
                    await ws.send_str(text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                if not self._hanging_up:
                    # The reader may not have seen the close yet; a dead socket we did not
                    # close is the server (or the network) ending the call.
                    self._server_closed = True
                    self.transcript.closed_by = "server"
                    self.transcript.errors.append(f"send failed: {exc!r}")
                self._closed.set()
                return False
        return True

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        t = self.transcript
        # No per-receive timeout: a quiet server is normal (the caller is talking), and
        # aiohttp's receive timeout marks the socket abnormally closed. The whole call
        # runs under `call_timeout`, and this task is cancelled at the end.
        while True:
            msg = await ws.receive()
            now = time.monotonic()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self._on_frame(msg.data, now)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                t.errors.append("server sent a binary frame (Twilio accepts text frames only)")
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                if not self._hanging_up:
                    self._server_closed = True
                    t.closed_by = "server"
                    self._t_closed = self._t_closed or now
                self._closed.set()
                return

    def _on_frame(self, text: str, now: float) -> None:
        t = self.transcript
        try:
            message = protocol.parse_outbound(text)
        except ProtocolError as exc:
            t.errors.append(f"bad frame from server: {exc}")
            return
        if message.stream_sid != t.stream_sid:
            t.errors.append(f"frame for another stream {message.stream_sid[:40]!r} ignored")
            return
        if isinstance(message, protocol.OutMedia):
            t.frames.append((now, len(message.payload)))
            self.buffer.media(message.payload, now)
        elif isinstance(message, protocol.OutMark):
            record = self.buffer.mark(message.name, now)
            if record is not None:
                self._echo_soon([record])
            self._marks_changed.set()
        else:
            t.clears.append(now)
            self._echo_soon(self.buffer.clear(now))
            self._marks_changed.set()

    def _echo_soon(self, records: list[MarkRecord]) -> None:
        # The reader must not wait on the send lock (Twilio never stalls its reader).
        if records:
            task = asyncio.create_task(self._echo(records))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _echo(self, records: list[MarkRecord]) -> None:
        if self._hanging_up:
            return
        sid = self.transcript.stream_sid
        for record in records:
            build = functools.partial(
                protocol.inbound_mark_message, stream_sid=sid, name=record.name
            )
            if await self._send(build):
                record.t_echoed = time.monotonic()

    async def _echo_marks(self) -> None:
        """Echo each queued mark when the audio before it has finished playing."""
        while True:
            now = time.monotonic()
            await self._echo(self.buffer.due(now))
            due = self.buffer.next_due()
            wait = 0.5 if due is None else max(0.0, due - time.monotonic())
            self._marks_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._marks_changed.wait(), timeout=wait)

    async def _media_clock(self, t0: float) -> None:
        """Send a 20 ms media frame at every absolute deadline t0 + k·20 ms."""
        t = self.transcript
        sid = t.stream_sid
        k = 0
        while True:
            k += 1
            delay = t0 + k * FRAME_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame, utterance = self._next_frame()
            now = time.monotonic()
            if utterance is not None:
                if utterance.t_start is None:
                    utterance.t_start = now
                if utterance.onset is None and _voiced(frame):
                    utterance.onset = now
                    t.speech_onsets.append(now)
            sent = await self._send(
                functools.partial(
                    protocol.inbound_media_message,
                    stream_sid=sid,
                    chunk=k,
                    timestamp_ms=k * 20,
                    payload=frame,
                )
            )
            if not sent:
                return
            t.media_sent += 1
            if utterance is not None and utterance.sent == len(utterance.frames):
                utterance.t_end = time.monotonic()
                utterance.done.set()

    def _next_frame(self) -> tuple[bytes, _Utterance | None]:
        while self._speech:
            utterance = self._speech[0]
            if utterance.sent < len(utterance.frames):
                frame = utterance.frames[utterance.sent]
                utterance.sent += 1
                if utterance.sent == len(utterance.frames):
                    self._speech.popleft()
                return frame, utterance
            self._speech.popleft()
            utterance.done.set()
        return SILENT_FRAME, None

    # ----------------------------------------------------------------- turn-taking

    async def _converse(self) -> None:
        t = self.transcript
        # A prompt "for" the next action is audio that arrives after this time.
        since = t.t_start
        for action in self.actions:
            self._check_open()
            if isinstance(action, Barge) or (
                isinstance(action, Hangup) and action.after_ms is not None
            ):
                after_ms = action.after_ms or 0
                first = await self._prompt_start(since)
                if first is not None:
                    await self._sleep_until(first + after_ms / 1000)
            else:
                await self._prompt_start(since)
                await self._until_quiet()
            self._check_open()
            start = time.monotonic()
            if isinstance(action, Say | Barge):
                u = await self._speak(action.text, barge=isinstance(action, Barge))
                # After a barge-in, the interrupted prompt's last frames may still be
                # arriving while the caller speaks; only audio after it is the reply.
                since = (u.t_end or time.monotonic()) if isinstance(action, Barge) else start
            elif isinstance(action, Dtmf):
                await self._press(action.digits)
                since = start
            elif isinstance(action, Silence):
                await self._wait(lambda: False, action.ms / 1000)
                self._caller_events.append(CallerSilent(action.ms, start, time.monotonic()))
                since = start
            else:
                self._caller_events.append(CallerHungUp(start))
                t.closed_by = "caller"
                t.actions_done += 1
                return
            t.actions_done += 1
        # Done talking: give the bot time to say goodbye and hang up.
        if not await self._wait(self._closed.is_set, self.hangup_timeout):
            t.closed_by = "timeout"
            t.errors.append(f"server did not hang up within {self.hangup_timeout:g} s")

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise _Closed

    async def _wait(self, predicate: Callable[[], bool], max_wait: float) -> bool:
        """Poll `predicate` every 10 ms for up to `max_wait` s; raise `_Closed` if the call ends."""
        deadline = time.monotonic() + max_wait
        while True:
            self._check_open()
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(0.01, left))

    async def _sleep_until(self, when: float) -> None:
        await self._wait(lambda: False, max(0.0, when - time.monotonic()))

    async def _prompt_start(self, since: float) -> float | None:
        """Arrival time of the first bot audio after `since`; None if none came in time."""
        frames = self.transcript.frames

        def first_after() -> float | None:
            # Frames are appended in arrival order, so the record is sorted by time.
            i = bisect.bisect_right(frames, since, key=_arrival)
            return frames[i][0] if i < len(frames) else None

        if await self._wait(lambda: first_after() is not None, self.prompt_timeout):
            return first_after()
        self.transcript.errors.append(
            f"no prompt within {self.prompt_timeout:g} s; answering anyway"
        )
        return None

    async def _until_quiet(self) -> None:
        limit = self.prompt_timeout * 4
        if not await self._wait(
            lambda: self.buffer.quiet_for(time.monotonic()) >= self.quiet, limit
        ):
            self.transcript.errors.append(f"bot never went quiet in {limit:g} s; answering anyway")

    async def _speak(self, text: str, *, barge: bool) -> _Utterance:
        u = _Utterance(text, self._utterances.get(text, []), barge)
        self._speech.append(u)
        duration = len(u.frames) * FRAME_SECONDS
        try:
            await self._wait(u.done.is_set, duration + 5.0)
        finally:
            # Recorded even when the server hangs up mid-sentence: it was (partly) said.
            now = time.monotonic()
            start = u.t_start if u.t_start is not None else now
            end = u.t_end if u.t_end is not None else now
            self._caller_events.append(CallerSaid(text, start, end, u.onset, barge))
        return u

    async def _press(self, digits: str) -> None:
        sid = self.transcript.stream_sid
        start = time.monotonic()
        for i, digit in enumerate(digits):
            if i:
                await self._sleep_until(start + i * DTMF_INTERVAL)
            if not await self._send(
                functools.partial(protocol.dtmf_message, stream_sid=sid, digit=digit)
            ):
                raise _Closed
        self._caller_events.append(CallerPressed(digits, start, time.monotonic()))


# --------------------------------------------------------------------------- after the call


def http_base_url(ws_url: str) -> str:
    """`ws://host:port/media` -> `http://host:port` (wss -> https)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def fetch_server_transcript(
    session: aiohttp.ClientSession,
    ws_url: str,
    call_sid: str,
    *,
    max_wait: float = 3.0,
    api_token: str | None = None,
) -> dict[str, Any] | None:
    """The server's record of the call, or None.

    The server finalizes the record just after the socket closes, so a missing call or
    one without `ended_at` yet is retried for up to `max_wait` seconds.
    """
    url = f"{http_base_url(ws_url)}/api/calls/{quote(call_sid)}"
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    deadline = time.monotonic() + max_wait
    last: dict[str, Any] | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return last
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=left)
            ) as resp:
                if resp.status == 200:
                    data = await resp.json(content_type=None)
                    if not isinstance(data, dict):
                        return None
                    last = data
                    if data.get("ended_at", "") is not None:
                        return data
                elif resp.status != 404:
                    return None
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, ValueError):
            return last
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


async def transcribe_heard(
    transcript: CallTranscript,
    recognizer: Recognizer,
    *,
    min_seconds: float = 0.2,
    per_segment: float = 30.0,
) -> None:
    """Fill in `text` of each `BotSaid` with what `recognizer` makes of the played audio.

    Segments are decoded concurrently; a pool with several workers spreads them out.
    """

    async def one(event: BotSaid) -> None:
        # A fresh resampler per segment: each is an utterance of its own.
        up = Upsampler()
        pcm16k = up.process(ulaw_to_pcm16(event.audio)) + up.flush()
        try:
            async with asyncio.timeout(per_segment):
                utterance = await recognizer.start(None)
                utterance.feed(pcm16k)
                event.text = (await utterance.finish()).text
        except (TimeoutError, IvrError) as exc:
            transcript.errors.append(f"transcription failed: {exc!r}")

    await asyncio.gather(*(one(e) for e in transcript.heard if e.duration_s >= min_seconds))


async def _close_pool(pool: RecognizerPool, starting: asyncio.Task[None]) -> None:
    starting.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await starting
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10.0):
            await pool.close()


async def run_call(
    url: str,
    actions: Sequence[Action],
    *,
    flow: str | None = None,
    voice: str = "en-us",
    rate: int | None = None,
    from_number: str = "+15550100001",
    to_number: str = "+15550100002",
    transcribe: bool = True,
    quiet_ms: int = 700,
    prompt_timeout: float = 15.0,
    hangup_timeout: float = 20.0,
    call_timeout: float = 120.0,
    connect_timeout: float = 10.0,
    api_timeout: float = 3.0,
    api_token: str | None = None,
    transcribe_timeout: float = 120.0,
    auth_token: str | None = None,
    signed_url: str | None = None,
    synthesizer: Synthesizer | None = None,
    recognizer: Recognizer | None = None,
) -> CallTranscript:
    """Place one simulated call to `url` (`ws://HOST:PORT/media`) and return its record.

    `recognizer` overrides the embedded pocketsphinx pool used when `transcribe`;
    `auth_token` signs the WebSocket upgrade like Twilio does (over `signed_url`, the
    public wss:// URL the server validates against, defaulting to `url`); `api_token` is
    the bearer token for `GET /api/calls/{call_sid}` when the server requires one.
    """
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        starting: asyncio.Task[None] | None = None
        if transcribe and recognizer is None:
            from ivr.speech.sphinx.pool import RecognizerPool

            pool = RecognizerPool(2)
            # The workers load their models while the call runs rather than after it; they
            # run niced, so the media clock keeps its timing.
            starting = asyncio.create_task(pool.start_workers())
            stack.push_async_callback(_close_pool, pool, starting)
            recognizer = pool
        caller = SimulatedCaller(
            url,
            actions,
            flow=flow,
            voice=voice,
            rate=rate,
            from_number=from_number,
            to_number=to_number,
            quiet_ms=quiet_ms,
            prompt_timeout=prompt_timeout,
            hangup_timeout=hangup_timeout,
            call_timeout=call_timeout,
            connect_timeout=connect_timeout,
            auth_token=auth_token,
            signed_url=signed_url,
            synthesizer=synthesizer,
            session=session,
        )
        transcript = await caller.run()
        if transcribe and recognizer is not None and transcript.heard:
            try:
                async with asyncio.timeout(transcribe_timeout):
                    if starting is not None:
                        await starting
                    await transcribe_heard(transcript, recognizer)
            except (TimeoutError, IvrError, OSError) as exc:
                transcript.errors.append(f"transcription failed: {exc!r}")
        transcript.server = await fetch_server_transcript(
            session, url, transcript.call_sid, max_wait=api_timeout, api_token=api_token
        )
    return transcript


# --------------------------------------------------------------------------- printing


def _rel(t: CallTranscript, when: float) -> str:
    return f"{when - t.t_start:7.2f}s"


def _describe(t: CallTranscript, event: Event) -> str:
    if isinstance(event, BotSaid):
        said = f'"{event.text}"' if event.text is not None else "(not transcribed)"
        notes = [f"{event.duration_s:.1f} s"]
        if event.mark:
            notes.append(f"mark {event.mark}")
        if event.cut_short:
            notes.append("cut short")
        return f"{_rel(t, event.t_start)}  bot     heard: {said}  [{', '.join(notes)}]"
    if isinstance(event, CallerSaid):
        kind = "barged in" if event.barge else "said"
        return f'{_rel(t, event.t_start)}  caller  {kind}: "{event.text}"'
    if isinstance(event, CallerPressed):
        return f"{_rel(t, event.t_start)}  caller  pressed: {event.digits}"
    if isinstance(event, CallerSilent):
        return f"{_rel(t, event.t_start)}  caller  (silent {event.ms} ms)"
    return f"{_rel(t, event.t_start)}  caller  hung up"


def _turn_lines(turn: dict[str, Any]) -> list[str]:
    head = f"turn {turn.get('seq', '?')}"
    if turn.get("step"):
        head += f"  step {turn['step']}"
    lines = [head]
    if turn.get("prompt"):
        heard = turn.get("prompt_heard")
        lines.append(f'    prompt: "{turn["prompt"]}"' + (f"  ({heard})" if heard else ""))
    kind = turn.get("input_kind")
    if kind:
        text = turn.get("input_text")
        got = f'{kind} "{text}"' if text is not None else str(kind)
        conf = turn.get("confidence")
        if isinstance(conf, int | float):
            got += f" ({conf:.2f})"
        lines.append(f"    server heard: {got}")
    if turn.get("understood") is not None or turn.get("result") is not None:
        lines.append(f"    understood: {turn.get('understood')}  result: {turn.get('result')}")
    return lines


def format_transcript(t: CallTranscript) -> str:
    """The call for humans: each turn as the caller heard it, beside the server's record."""
    lines = [
        f"call {t.call_sid}  stream {t.stream_sid}" + (f"  flow {t.flow}" if t.flow else ""),
        f"  {t.duration_s:.1f} s, closed by {t.closed_by}, {len(t.frames)} frames received,"
        f" {len(t.marks)} marks, {len(t.clears)} clears",
    ]
    # Group the caller's side into rounds: the bot audio heard, then the caller's answer.
    # Round i is shown beside the server's turn i, which is how both sides count turns.
    rounds: list[list[Event]] = [[]]
    for event in t.events:
        rounds[-1].append(event)
        if not isinstance(event, BotSaid):
            rounds.append([])
    if not rounds[-1]:
        rounds.pop()
    turns: list[dict[str, Any]] = []
    if t.server is not None and isinstance(t.server.get("turns"), list):
        turns = [x for x in t.server["turns"] if isinstance(x, dict)]
    for i in range(max(len(rounds), len(turns))):
        lines.append("")
        if i < len(turns):
            lines += ["  " + s for s in _turn_lines(turns[i])]
        else:
            lines.append(f"  round {i + 1}")
        for event in rounds[i] if i < len(rounds) else []:
            lines.append("    " + _describe(t, event))
    if t.server is None:
        lines += ["", "  (no server record)"]
    else:
        outcome = t.server.get("outcome")
        if outcome is not None:
            lines += ["", f"  server outcome: {outcome}"]
    if t.errors:
        lines += ["", "  problems:"] + [f"    - {e}" for e in t.errors]
    return "\n".join(lines)
