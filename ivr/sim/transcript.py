"""The record of one simulated call, and how it reads.

`CallTranscript` holds everything the caller observed: each stretch of bot audio as it
was heard (`BotSaid`), what the caller said, pressed, or left silent, every frame, mark
and clear with its arrival time, and the server's own record of the call, fetched
afterwards from `GET /api/calls/{call_sid}`. `format_transcript` prints the call as a
person follows it: what the bot played (the server's prompt text), what the caller did,
what the server understood; the caller's own transcription of the audio only when there
is one (`ivr call --transcribe`), labelled as the recognizer check it is.

All times are `time.monotonic()` seconds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import quote

import aiohttp

from ivr.sim.dial import call_urls
from ivr.sim.playback import MarkRecord

__all__ = [
    "BotSaid",
    "CallTranscript",
    "CallerHungUp",
    "CallerPressed",
    "CallerSaid",
    "CallerSilent",
    "ClosedBy",
    "TranscriptEvent",
    "fetch_server_transcript",
    "format_transcript",
    "http_base_url",
    "new_sid",
]

ClosedBy: TypeAlias = Literal["server", "caller", "timeout"]


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix and 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass(slots=True)
class BotSaid:
    """One stretch of bot audio as the caller heard it (a prompt, or what was left of it)."""

    t_start: float
    t_end: float
    duration_s: float
    text: str | None = None
    """What the caller's recognizer made of it (a check of the audio, not what the bot
    said: that is the server's prompt text); None when not transcribed."""
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


TranscriptEvent: TypeAlias = BotSaid | CallerSaid | CallerPressed | CallerSilent | CallerHungUp


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
    events: list[TranscriptEvent] = field(default_factory=list)
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


# --------------------------------------------------------------------------- the server's record


def http_base_url(url: str) -> str:
    """`ws://host:port/media` -> `http://host:port` (wss -> https); an http(s) base as is."""
    return call_urls(url).base


async def fetch_server_transcript(
    session: aiohttp.ClientSession,
    url: str,
    call_sid: str,
    *,
    max_wait: float = 3.0,
    api_token: str | None = None,
) -> dict[str, Any] | None:
    """The server's record of the call, or None.

    The server finalizes the record just after the socket closes, so a missing call or
    one without `ended_at` yet is retried for up to `max_wait` seconds.
    """
    api = f"{http_base_url(url)}/api/calls/{quote(call_sid)}"
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    deadline = time.monotonic() + max_wait
    last: dict[str, Any] | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return last
        try:
            async with session.get(
                api, headers=headers, timeout=aiohttp.ClientTimeout(total=left)
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


# --------------------------------------------------------------------------- printing


def _rel(t: CallTranscript, when: float) -> str:
    return f"{when - t.t_start:7.2f}s"


_PAD = " " * 10  # under the time column


def _caller_line(t: CallTranscript, event: TranscriptEvent) -> str:
    if isinstance(event, CallerSaid):
        kind = "barged in" if event.barge else "said"
        return f'{_rel(t, event.t_start)}  caller  {kind} "{event.text}"'
    if isinstance(event, CallerPressed):
        return f"{_rel(t, event.t_start)}  caller  pressed {event.digits}"
    if isinstance(event, CallerSilent):
        return f"{_rel(t, event.t_start)}  caller  (silent {event.ms} ms)"
    return f"{_rel(t, event.t_start)}  caller  hung up"


_HEARD_NOTE = {"interrupted": "  (interrupted)", "unheard": "  (not heard)"}


def _bot_lines(t: CallTranscript, played: list[BotSaid], turn: dict[str, Any] | None) -> list[str]:
    """What the bot played: the server's own prompt text (what it synthesized), not what a
    recognizer makes of it; with no server record, how much audio there was. A caller-side
    transcription, when asked for, follows as a recognizer check."""
    when = _rel(t, played[0].t_start) if played else _PAD[:-2]
    prompt = turn.get("prompt") if turn else None
    lines: list[str] = []
    if prompt:
        lines.append(f'{when}  bot     "{prompt}"'
                     + _HEARD_NOTE.get(str(turn.get("prompt_heard") if turn else ""), ""))
    elif played:
        seconds = sum(e.duration_s for e in played)
        cut = "  (cut short)" if any(e.cut_short for e in played) else ""
        lines.append(f"{when}  bot     ({seconds:.1f} s of audio){cut}")
    for e in played:
        if e.text is not None:
            lines.append(f'{_PAD}        (recognizer check: "{e.text}")')
    return lines


def _understood_line(turn: dict[str, Any]) -> str | None:
    """What the server made of the caller's answer, from its record of the turn."""
    result = turn.get("result")
    kind = turn.get("input_kind")
    if result not in ("match", "no_match", "no_input") and not kind:
        return None
    heard = ""
    if kind:
        text = turn.get("input_text")
        heard = f'{kind} "{text}"' if text is not None else str(kind)
        conf = turn.get("confidence")
        if isinstance(conf, int | float):
            heard += f" {conf:.2f}"
        heard = f"  (heard {heard})"
    if result == "no_input":
        what = "nothing heard"
    elif result == "no_match":
        what = "not understood"
    else:
        what = f"understood: {turn.get('understood')}"
    return f"{_PAD}        → {what}{heard}"


def format_transcript(t: CallTranscript) -> str:
    """The call for a person: each prompt the bot played (the server's own text), the
    caller's answer, and what the server understood of it."""
    lines = [f"call {t.call_sid}" + (f"  flow {t.flow}" if t.flow else "")
             + f"  {t.duration_s:.1f} s, closed by {t.closed_by}", ""]
    # Group the caller's side into rounds: the bot audio heard, then the caller's answer.
    # Round i is shown with the server's turn i, which is how both sides count turns.
    rounds: list[list[TranscriptEvent]] = [[]]
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
        events = rounds[i] if i < len(rounds) else []
        turn = turns[i] if i < len(turns) else None
        lines += ["  " + s for s in _bot_lines(t, [e for e in events if isinstance(e, BotSaid)],
                                               turn)]
        for event in events:
            if not isinstance(event, BotSaid):
                lines.append("  " + _caller_line(t, event))
        understood = _understood_line(turn) if turn else None
        if understood:
            lines.append("  " + understood)
    if t.server is None:
        lines += ["", "  (no server record)"]
    else:
        outcome = t.server.get("outcome")
        if outcome is not None:
            lines += ["", f"  server outcome: {outcome}"]
    if t.errors:
        lines += ["", "  problems:"] + [f"    - {e}" for e in t.errors]
    return "\n".join(lines)
