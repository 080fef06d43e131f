"""The record of one simulated call, and how it reads.

`CallTranscript` holds everything the caller observed: each stretch of bot audio as it
was heard (`BotSaid`), what the caller said, pressed, or left silent, every frame, mark
and clear with its arrival time, and the server's own record of the call, fetched
afterwards from `GET /api/calls/{call_sid}`. `format_transcript` prints both side by
side, one turn at a time.

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


def _describe(t: CallTranscript, event: TranscriptEvent) -> str:
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
