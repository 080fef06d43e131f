"""A raw `/media` peer for tests that misbehave on the wire, and what a caller observes.

`start_stream` is the one place such a test starts a call: whatever it takes for the
server to accept a `start` lives there, so the tests themselves only misbehave.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import aiohttp

from ivr.sim.dial import dial, voice_form
from ivr.sim.transcript import CallTranscript, new_sid
from ivr.telephony import inbound

FRAME = b"\xff" * 160  # 20 ms of µ-law silence
# Loopback and a shared 2-core machine add a little jitter to arrival times.
JITTER_S = 0.012
LEAD_S = 0.160  # the server's default lead (IVR_PLAYER_LEAD_MS): audio buffered ahead


@dataclass(frozen=True, slots=True)
class Stream:
    stream_sid: str
    call_sid: str
    account_sid: str


async def start_stream(
    http: aiohttp.ClientSession, base_url: str, ws: aiohttp.ClientWebSocketResponse,
    *, flow: str = "demo",
) -> Stream:
    """Start a call on `ws` (a socket to `base_url`/media) as Twilio does: POST `/voice`
    for the call, then `connected` and a `start` carrying the TwiML's parameters (the
    signed stream token among them)."""
    stream = Stream(new_sid("MZ"), new_sid("CA"), new_sid("AC"))
    form = voice_form(stream.call_sid, stream.account_sid, "+15550100001", "+15550100002")
    dialled = await dial(http, base_url, form, flow=flow)
    await ws.send_str(inbound.connected_message())
    await ws.send_str(inbound.start_message(
        1, stream.stream_sid, stream.account_sid, stream.call_sid, dialled.parameters,
    ))
    return stream


def media(stream: Stream, seq: int, timestamp_ms: int, payload: bytes = FRAME) -> str:
    """A media frame of `stream` (its chunk number follows `seq`)."""
    return inbound.inbound_media_message(seq, stream.stream_sid, seq - 1, timestamp_ms, payload)


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read (and drop) what the server sends until it closes; its close code. Callers
    bound the wait (`asyncio.timeout`)."""
    while True:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            return ws.close_code


def prompt_segments(t: CallTranscript) -> list[list[float]]:
    """Arrival times of outbound frames, split into prompts at marks and clears."""
    cuts = sorted([m.t_received for m in t.marks] + list(t.clears))
    segments: list[list[float]] = [[]]
    i = 0
    for arrival, _ in t.frames:
        while i < len(cuts) and cuts[i] <= arrival:
            segments.append([])
            i += 1
        segments[-1].append(arrival)
    return [s for s in segments if s]


def max_silence_heard(t: CallTranscript) -> float:
    """The longest silence a caller hears mid-prompt: the far end plays each 20 ms frame
    from its buffer, so a frame late by less than what is buffered ahead is not heard.
    For calls without a `clear` (which empties that buffer)."""
    worst = 0.0
    until = 0.0  # when the audio received so far ends playing (a mark does not drain it)
    for seg in prompt_segments(t):
        # Between prompts (the caller's turn) silence is expected: not counted.
        until = max(until, seg[0])
        for arrival in seg:
            worst = max(worst, arrival - until)
            until = max(until, arrival) + 0.020
    return worst


def max_prompt_gap(t: CallTranscript) -> float:
    """The longest wait between two outbound frames of one prompt (0.020 s when paced)."""
    gaps = [b - a for seg in prompt_segments(t) for a, b in itertools.pairwise(seg)]
    return max(gaps, default=0.0)
