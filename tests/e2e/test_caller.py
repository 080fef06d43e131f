"""The simulated caller against a tiny scripted WebSocket server (loopback only).

The fake server plays the part of our IVR: it records every frame the caller sends with
its arrival time, and follows a per-test script (send audio, marks, clear, hang up).
Assertions run in the test body, after the call, on both sides' records.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from twilio.twiml.voice_response import Connect, VoiceResponse

from ivr.audio.codec import FRAME_BYTES, pcm16_to_ulaw, ulaw_to_pcm16
from ivr.errors import IvrError
from ivr.grammar import Grammar
from ivr.sim.dial import CallUrls, call_urls
from ivr.sim.playback import PlaybackBuffer
from ivr.sim.run import run_call
from ivr.sim.script import (
    ActionArg,
    Barge,
    CallerAction,
    PressKeys,
    PutDown,
    Say,
    Silence,
)
from ivr.sim.transcript import (
    BotSaid,
    CallerHungUp,
    CallerPressed,
    CallerSaid,
    CallTranscript,
    format_transcript,
    http_base_url,
    new_sid,
)
from ivr.sim.voice import synthesize
from ivr.speech.base import Recognition

SID = re.compile(r"^(CA|MZ|AC)[0-9a-f]{32}$")


# --------------------------------------------------------------------------- fakes


def tone_ulaw(seconds: float, freq: float = 440.0) -> bytes:
    n = round(seconds * 8000)
    pcm = (8000 * np.sin(2 * math.pi * freq * np.arange(n) / 8000)).astype(np.int16)
    return pcm16_to_ulaw(pcm.tobytes())


def is_voiced(ulaw: bytes) -> bool:
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(pcm * pcm))) > 200


class ToneSynth:
    """Synthesizer stand-in: 60 ms of silence (trimmed by the caller), then a 16 kHz tone."""

    name = "tone"

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        n = round(self.seconds * 16000)
        t = np.arange(n) / 16000
        pcm = (8000 * np.sin(2 * math.pi * 300 * t)).astype(np.int16).tobytes()
        yield b"\0\0" * 960, 16000
        # Odd chunk sizes: the converter must carry split samples across chunks.
        for i in range(0, len(pcm), 999):
            yield pcm[i : i + 999], 16000


@dataclass
class FakeUtterance:
    audio: bytearray = field(default_factory=bytearray)

    def feed(self, pcm16_16k: bytes) -> None:
        self.audio += pcm16_16k

    async def finish(self) -> Recognition:
        return Recognition(text=f"{len(self.audio) // 32} ms", engine="fake")

    async def cancel(self) -> None:
        pass


class FakeRecognizer:
    name = "fake"

    async def start(self, grammar: Grammar | None) -> FakeUtterance:
        return FakeUtterance()


class Peer:
    """The server's side of one call: everything received, and helpers to talk back."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.sent: list[tuple[float, str]] = []  # (time, "media"/"mark:NAME"/"clear")
        self.stream_sid = ""

    async def pump(self) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.received.append((time.monotonic(), data))
                if data["event"] == "start":
                    self.stream_sid = data["streamSid"]

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], *, after: int = 0, within: float = 5.0
    ) -> tuple[int, float]:
        """Index and arrival time of the first received message from `after` matching."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for i in range(after, len(self.received)):
                t, data = self.received[i]
                if pred(data):
                    return i, t
            await asyncio.sleep(0.005)
        raise AssertionError("fake server: expected message never came")

    async def send_audio(self, ulaw: bytes) -> None:
        for i in range(0, len(ulaw), FRAME_BYTES):
            frame = ulaw[i : i + FRAME_BYTES]
            payload = base64.b64encode(frame).decode()
            await self.ws.send_str(
                json.dumps(
                    {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
                )
            )
            self.sent.append((time.monotonic(), "media"))

    async def send_mark(self, name: str) -> float:
        await self.ws.send_str(
            json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
        )
        now = time.monotonic()
        self.sent.append((now, f"mark:{name}"))
        return now

    async def send_clear(self) -> float:
        await self.ws.send_str(json.dumps({"event": "clear", "streamSid": self.stream_sid}))
        now = time.monotonic()
        self.sent.append((now, "clear"))
        return now

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, d) for t, d in self.received if d["event"] == name]


Script = Callable[[Peer], Awaitable[None]]


def event_is(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda d: d["event"] == name


def voiced_media(d: dict[str, Any]) -> bool:
    return d["event"] == "media" and is_voiced(base64.b64decode(d["media"]["payload"]))


def silent_media(d: dict[str, Any]) -> bool:
    return d["event"] == "media" and not is_voiced(base64.b64decode(d["media"]["payload"]))


@asynccontextmanager
async def fake_server(
    script: Script, *, hang_up: bool = True, api: dict[str, Any] | None = None,
    voices: list[tuple[str | None, dict[str, str]]] | None = None,
) -> AsyncIterator[tuple[str, list[Peer]]]:
    """Serve `script` at ws://127.0.0.1:PORT/media; yields (url, peers).

    `/voice` answers as ours does, a stream with `from`, `to`, `flow` (from `?flow=`)
    and a token; each post is appended to `voices` as (?flow=, form)."""
    peers: list[Peer] = []

    async def voice(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        flow = request.query.get("flow")
        if voices is not None:
            voices.append((flow, form))
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=str(request.url.with_scheme("ws").with_path("/media")))
        params = {"flow": flow or "", "from": form["From"], "to": form["To"],
                  "token": "token-for-" + form["CallSid"]}
        for name, value in params.items():
            if value:
                stream.parameter(name=name, value=value)
        response.append(connect)
        return web.Response(text=str(response.to_xml()), content_type="text/xml")

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peer = Peer(ws)
        peers.append(peer)
        pump = asyncio.create_task(peer.pump())
        try:
            await peer.wait_for(event_is("start"))
            await script(peer)
            if hang_up:
                await ws.close()
            await asyncio.wait_for(pump, 10)
        finally:
            pump.cancel()
        return ws

    async def call(request: web.Request) -> web.Response:
        if api is None or request.match_info["sid"] != peers[0].received[1][1]["start"]["callSid"]:
            raise web.HTTPNotFound()
        return web.json_response(api)

    app = web.Application()
    app.router.add_post("/voice", voice)
    app.router.add_get("/media", media)
    app.router.add_get("/api/calls/{sid}", call)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/media")).replace("http://", "ws://"), peers
    finally:
        await server.close()


async def call(url: str, actions: Sequence[CallerAction], **overrides: Any) -> CallTranscript:
    """`run_call` with test-sized waits: no real synthesis, no transcription by default."""
    options: dict[str, Any] = {
        "quiet_ms": 300,
        "transcribe": False,
        "api_timeout": 0.2,
        "hangup_timeout": 5.0,
        "call_timeout": 15.0,
        "prompt_timeout": 3.0,
        "synthesizer": ToneSynth(),
    }
    return await run_call(url, actions, **(options | overrides))


# --------------------------------------------------------------------------- wire format


async def test_message_sequence_and_formats() -> None:
    prompt = tone_ulaw(0.3)
    times: dict[str, float] = {}

    async def script(peer: Peer) -> None:
        await peer.send_audio(prompt)  # a burst: Twilio buffers it and plays it in real time
        times["prompt"] = time.monotonic()
        await peer.send_mark("p1")
        i, _ = await peer.wait_for(voiced_media)
        times["voice"] = peer.received[i][0]
        await peer.wait_for(silent_media, after=i)
        await peer.send_audio(tone_ulaw(0.1))  # "now press your PIN"
        await peer.send_mark("p2")
        await peer.wait_for(lambda d: d["event"] == "dtmf" and d["dtmf"]["digit"] == "2")
        await peer.send_audio(tone_ulaw(0.1))
        await peer.send_mark("bye")
        await peer.wait_for(lambda d: d["event"] == "mark" and d["mark"]["name"] == "bye")

    voices: list[tuple[str | None, dict[str, str]]] = []
    async with fake_server(script, voices=voices) as (url, peers):
        t = await call(
            url,
            [Say("hello"), PressKeys("12")],
            flow="demo",
        )

    peer = peers[0]
    msgs = [d for _, d in peer.received]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert SID.match(start["streamSid"]) and start["streamSid"].startswith("MZ")
    body = start["start"]
    assert body["streamSid"] == start["streamSid"]
    assert body["callSid"].startswith("CA") and SID.match(body["callSid"])
    assert body["accountSid"].startswith("AC") and SID.match(body["accountSid"])
    assert body["tracks"] == ["inbound"]
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    # Dialled as Twilio does: /voice first (the flow pinned by ?flow=), then the stream
    # started with exactly the parameters its TwiML gave, the token among them.
    assert voices == [("demo", {
        "AccountSid": body["accountSid"], "ApiVersion": "2010-04-01",
        "CallSid": body["callSid"], "CallStatus": "ringing", "Called": "+15550100002",
        "Caller": "+15550100001", "Direction": "inbound", "From": "+15550100001",
        "To": "+15550100002",
    })]
    assert body["customParameters"] == {
        "flow": "demo",
        "from": "+15550100001",
        "to": "+15550100002",
        "token": "token-for-" + body["callSid"],
    }
    assert (t.call_sid, t.stream_sid, t.account_sid) == (
        body["callSid"],
        start["streamSid"],
        body["accountSid"],
    )

    # Every later message is numbered +1 and carries the stream SID.
    seqs = [int(m["sequenceNumber"]) for m in msgs[1:]]
    assert seqs == list(range(1, len(msgs)))
    assert all(m["streamSid"] == start["streamSid"] for m in msgs[1:])
    assert all(isinstance(m["sequenceNumber"], str) for m in msgs[1:])

    media = [(at, m) for at, m in peer.received if m["event"] == "media"]
    chunks = [int(m["media"]["chunk"]) for _, m in media]
    assert chunks == list(range(1, len(media) + 1))
    assert [m["media"]["timestamp"] for _, m in media] == [str(20 * c) for c in chunks]
    assert all(m["media"]["track"] == "inbound" for _, m in media)
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for _, m in media)
    # Drift-free: frame k arrives ~k·20 ms after the start, whatever the sleep overshoot.
    t_start = peer.received[1][0]
    lags = [(at - t_start) * 1000 - int(m["media"]["timestamp"]) for at, m in media]
    assert max(lags) < 80 and min(lags) > -40, (min(lags), max(lags))
    assert len(media) >= 0.9 * (media[-1][0] - t_start) / 0.020

    # The answer waited for the prompt to play (0.3 s) and the bot to go quiet (0.3 s).
    assert times["voice"] - times["prompt"] >= 0.3 + 0.3 - 0.03

    # Mark echoed only after the prompt had played.
    echoes = peer.events("mark")
    assert [d["mark"]["name"] for _, d in echoes] == ["p1", "p2", "bye"]
    assert echoes[0][0] - times["prompt"] >= 0.3 - 0.01

    dtmf = peer.events("dtmf")
    assert [d["dtmf"] for _, d in dtmf] == [
        {"track": "inbound_track", "digit": "1"},
        {"track": "inbound_track", "digit": "2"},
    ]
    assert 0.12 <= dtmf[1][0] - dtmf[0][0] <= 0.3
    # The digits came after the speech, which came after the prompt.
    voiced = [at for at, m in media if is_voiced(base64.b64decode(m["media"]["payload"]))]
    assert voiced and dtmf[0][0] > voiced[-1]
    # 0.3 s of tone (the synthesizer's leading silence trimmed) is 15 frames.
    assert 14 <= len(voiced) <= 16

    assert t.closed_by == "server"
    assert not peer.events("stop")  # the server hung up; Twilio sends no stop then
    kinds = [type(e) for e in t.events]
    assert kinds == [BotSaid, CallerSaid, BotSaid, CallerPressed, BotSaid]
    said = t.events[1]
    assert isinstance(said, CallerSaid) and said.onset is not None
    assert t.speech_onsets == [said.onset]
    assert t.actions_done == 2
    assert t.frames and all(n == 160 for _, n in t.frames)
    assert not t.errors


async def test_caller_hangs_up_with_stop_last() -> None:
    async def script(peer: Peer) -> None:
        await peer.send_audio(tone_ulaw(0.1))
        await peer.send_mark("p1")
        i, _ = await peer.wait_for(voiced_media)
        await peer.wait_for(silent_media, after=i)
        await peer.send_audio(tone_ulaw(0.1))
        await peer.wait_for(event_is("stop"))

    async with fake_server(script, hang_up=False) as (url, peers):
        t = await call(
            url,
            [Say("hi"), PutDown()],
        )

    msgs = [d for _, d in peers[0].received]
    assert msgs[-1]["event"] == "stop"
    assert msgs[-1]["stop"] == {"accountSid": t.account_sid, "callSid": t.call_sid}
    assert int(msgs[-1]["sequenceNumber"]) == len(msgs) - 1
    assert "flow" not in msgs[1]["start"]["customParameters"]
    assert t.closed_by == "caller"
    assert isinstance(t.events[-1], CallerHungUp)


async def test_server_that_never_hangs_up_times_out() -> None:
    async def script(peer: Peer) -> None:
        await peer.send_audio(tone_ulaw(0.1))
        await peer.wait_for(event_is("stop"), within=10)

    async with fake_server(script, hang_up=False) as (url, peers):
        t = await call(url, [PressKeys("5")], hangup_timeout=0.3)

    assert t.closed_by == "timeout"
    assert peers[0].received[-1][1]["event"] == "stop"
    assert any("did not hang up" in e for e in t.errors)


async def test_call_timeout_bounds_a_silent_server() -> None:
    async def script(peer: Peer) -> None:
        await peer.wait_for(event_is("stop"), within=10)

    started = time.monotonic()
    async with fake_server(script, hang_up=False) as (url, peers):
        t = await call(url, [Say("hello?")], call_timeout=0.5)
    assert time.monotonic() - started < 3
    assert t.closed_by == "timeout"
    assert peers[0].received[-1][1]["event"] == "stop"
    assert t.actions_done == 0


# --------------------------------------------------------------------------- playback


async def test_marks_echo_after_playback_and_clear_releases_them() -> None:
    times: dict[str, float] = {}

    async def script(peer: Peer) -> None:
        await peer.send_audio(tone_ulaw(0.5))
        times["a"] = await peer.send_mark("a")
        await peer.send_mark("b")
        await asyncio.sleep(0.15)
        times["clear"] = await peer.send_clear()
        await peer.wait_for(lambda d: d["event"] == "mark" and d["mark"]["name"] == "b")
        times["c"] = await peer.send_mark("c")  # nothing buffered: echoed at once
        await peer.wait_for(lambda d: d["event"] == "mark" and d["mark"]["name"] == "c")
        await peer.send_audio(tone_ulaw(0.2))
        times["d"] = await peer.send_mark("d")
        await peer.wait_for(lambda d: d["event"] == "mark" and d["mark"]["name"] == "d")

    async with fake_server(script) as (url, peers):
        t = await call(
            url,
            [],
        )

    echoes = {d["mark"]["name"]: at for at, d in peers[0].events("mark")}
    assert list(echoes) == ["a", "b", "c", "d"]
    # a and b were pending (0.5 s of audio ahead of them): the clear released them at once.
    assert echoes["a"] - times["clear"] < 0.05
    assert echoes["b"] - times["clear"] < 0.05
    assert echoes["a"] - times["a"] < 0.3
    assert echoes["c"] - times["c"] < 0.05
    assert 0.2 - 0.01 <= echoes["d"] - times["d"] < 0.3

    by_name = {m.name: m for m in t.marks}
    assert by_name["a"].cleared and by_name["b"].cleared
    assert not by_name["c"].cleared and not by_name["d"].cleared
    assert all(m.t_echoed is not None and m.t_echoed >= m.t_received for m in t.marks)
    assert len(t.clears) == 1
    heard = t.heard
    assert len(heard) == 2
    assert heard[0].cut_short and heard[0].mark == "a"
    assert 0.1 <= heard[0].duration_s <= 0.25
    assert not heard[1].cut_short and heard[1].mark == "d"
    assert heard[1].duration_s == pytest.approx(0.2)
    assert len(t.frames) == 25 + 10


async def test_barge_in_starts_after_first_audio_and_records_onset() -> None:
    times: dict[str, float] = {}

    async def script(peer: Peer) -> None:
        # A 3 s prompt sent the way the real player does: 20 ms frames, lead ~100 ms.
        frames = tone_ulaw(3.0)
        t0 = time.monotonic()
        for k in range(0, len(frames), FRAME_BYTES):
            if any(voiced_media(d) for _, d in peer.received):
                break
            if k == 0:
                times["first"] = time.monotonic()
            await peer.send_audio(frames[k : k + FRAME_BYTES])
            due = t0 + (k // FRAME_BYTES) * 0.020 - 0.100
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        i, times["onset"] = await peer.wait_for(voiced_media)
        times["clear"] = await peer.send_clear()
        # End of the caller's speech: a silent frame after the voiced ones.
        await peer.wait_for(silent_media, after=i)

    async with fake_server(script) as (url, _):
        t = await call(
            url,
            [Barge("stop", after_ms=300)],
        )

    assert len(t.speech_onsets) == 1
    first_arrival = t.frames[0][0]
    onset = t.speech_onsets[0]
    assert 0.3 <= onset - first_arrival < 0.4
    assert len(t.clears) == 1 and t.clears[0] > onset
    latency = t.clear_latency(onset)
    assert latency is not None and 0 < latency < 0.3
    said = [e for e in t.events if isinstance(e, CallerSaid)]
    assert len(said) == 1 and said[0].barge and said[0].onset == onset
    bot = t.heard[0]
    assert bot.cut_short
    assert bot.duration_s == pytest.approx(t.clears[0] - bot.t_start, abs=0.03)
    assert times["onset"] - times["first"] >= 0.3 - 0.01


async def test_silence_then_answer_the_reprompt() -> None:
    async def script(peer: Peer) -> None:
        await peer.send_audio(tone_ulaw(0.1))
        await peer.send_mark("ask")
        await asyncio.sleep(0.5)  # the caller stays silent; "no input": prompt again
        await peer.send_audio(tone_ulaw(0.1))
        await peer.send_mark("ask-again")
        i, _ = await peer.wait_for(voiced_media)
        await peer.wait_for(silent_media, after=i)

    async with fake_server(script) as (url, _):
        t = await call(
            url,
            [Silence(300), Say("yes")],
        )

    said = [e for e in t.events if isinstance(e, CallerSaid)]
    assert len(said) == 1
    assert len(t.heard) == 2
    # Answered the second prompt, after it had played.
    assert said[0].t_start > t.heard[1].t_end


# --------------------------------------------------------------------------- transcripts


async def test_transcript_with_recognizer_and_server_record() -> None:
    record = {
        "call_sid": "",
        "outcome": "completed",
        "ended_at": "2025-01-01T00:00:00.000+00:00",
        "turns": [
            {
                "seq": 1,
                "step": "ask",
                "prompt": "Say yes or no.",
                "prompt_heard": "played",
                "input_kind": "speech",
                "input_text": "yes",
                "confidence": 0.9,
                "understood": "yes",
                "result": "match",
            }
        ],
    }

    async def script(peer: Peer) -> None:
        await peer.send_audio(tone_ulaw(0.4))
        await peer.send_mark("ask")
        i, _ = await peer.wait_for(voiced_media)
        await peer.wait_for(silent_media, after=i)
        await peer.send_audio(tone_ulaw(0.3))
        await peer.send_mark("bye")
        await peer.wait_for(lambda d: d["event"] == "mark" and d["mark"]["name"] == "bye")

    async with fake_server(script, api=record) as (url, _):
        t = await call(
            url, [Say("yes")], transcribe=True, recognizer=FakeRecognizer(), api_timeout=2.0
        )

    assert t.server == record
    assert [e.text for e in t.heard] == ["400 ms", "300 ms"]
    text = format_transcript(t)
    assert t.call_sid in text
    # What the bot said is the server's prompt text; the caller's transcription of the
    # audio is a recognizer check under it, then the answer and what the server made of it.
    lines = text.splitlines()
    order = [
        'bot     "Say yes or no."',
        '(recognizer check: "400 ms")',
        'caller  said "yes"',
        '→ understood: yes  (heard speech "yes" 0.90)',
        'bot     (0.3 s of audio)',  # round 2: no server turn for it
        '(recognizer check: "300 ms")',
        "server outcome: completed",
    ]
    found = [next((i for i, line in enumerate(lines) if want in line), -1) for want in order]
    assert -1 not in found and found == sorted(found), text
    assert "heard:" not in text  # no caller-side transcription passed off as the bot's words


async def test_transcript_without_a_check_shows_only_what_was_played() -> None:
    """The default: no recognizer check; the bot's lines are the server's prompts."""
    record = {
        "call_sid": "", "outcome": "completed", "ended_at": "2025-01-01T00:00:00+00:00",
        "turns": [{"seq": 1, "step": "ask", "prompt": "Say yes or no.", "prompt_heard":
                   "interrupted", "input_kind": "speech", "input_text": "pizza",
                   "confidence": 0.1, "understood": None, "result": "no_match"}],
    }

    async def script(peer: Peer) -> None:
        await peer.send_audio(tone_ulaw(0.4))
        await peer.send_mark("ask")
        i, _ = await peer.wait_for(voiced_media)
        await peer.wait_for(silent_media, after=i)

    async with fake_server(script, api=record) as (url, _):
        t = await call(url, [Say("pizza")], api_timeout=2.0)

    assert [e.text for e in t.heard] == [None]
    text = format_transcript(t)
    assert 'bot     "Say yes or no."  (interrupted)' in text
    assert '→ not understood  (heard speech "pizza" 0.10)' in text
    assert "recognizer check" not in text


async def test_missing_server_record_is_none() -> None:
    async def script(peer: Peer) -> None:
        await peer.send_audio(tone_ulaw(0.1))
        await peer.send_mark("bye")
        await peer.wait_for(event_is("mark"))

    async with fake_server(script) as (url, _):
        t = await call(
            url,
            [],
        )
    assert t.server is None
    assert "(no server record)" in format_transcript(t)


async def test_unreachable_server_does_not_hang() -> None:
    started = time.monotonic()
    with pytest.raises(IvrError, match="cannot connect"):
        await call("ws://127.0.0.1:9/media", [])
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- pure parts


def test_playback_buffer_timeline() -> None:
    buf = PlaybackBuffer(gap=0.4)
    buf.media(b"\x00" * 800, now=10.0)  # 100 ms
    buf.media(b"\x00" * 800, now=10.01)  # queued behind: plays 10.1-10.2
    assert buf.mark("m1", now=10.02) is None
    assert buf.next_due() == pytest.approx(10.2)
    assert buf.due(10.19) == []
    assert [m.name for m in buf.due(10.2)] == ["m1"]
    assert buf.idle(10.2)
    assert buf.quiet_for(10.5) == pytest.approx(0.3)
    # Nothing buffered: a mark is due at once.
    echo = buf.mark("m2", now=10.5)
    assert echo is not None and echo.name == "m2"
    # A new prompt, partly cleared.
    buf.media(b"\x00" * 1600, now=11.0)
    assert buf.mark("m3", now=11.0) is None
    assert not buf.idle(11.1) and buf.quiet_for(11.1) == 0.0
    released = buf.clear(now=11.05)
    assert [m.name for m in released] == ["m3"] and released[0].cleared
    assert buf.idle(11.05)
    assert [len(s.audio) for s in buf.segments] == [1600, 400]
    assert buf.segments[1].cut_short and buf.segments[1].mark == "m3"


def test_playback_buffer_segments_on_gaps_and_finish() -> None:
    buf = PlaybackBuffer(gap=0.4)
    buf.media(b"\x00" * 160, now=0.0)
    buf.media(b"\x00" * 160, now=0.1)  # a 80 ms underrun: same prompt
    buf.media(b"\x00" * 160, now=1.0)  # long silence: a new prompt
    buf.media(b"\x00" * 8000, now=1.01)
    buf.finish(now=1.52)  # hung up half a second into the 1 s tail
    sizes = [len(s.audio) for s in buf.segments]
    assert sizes == [320, 160 + 4000]
    assert buf.segments[1].cut_short and not buf.segments[0].cut_short


def test_sids_and_urls() -> None:
    for prefix in ("CA", "MZ", "AC"):
        sid = new_sid(prefix)
        assert SID.match(sid) and sid.startswith(prefix)
    assert new_sid("CA") != new_sid("CA")
    assert http_base_url("ws://127.0.0.1:8080/media") == "http://127.0.0.1:8080"
    assert http_base_url("wss://ivr.example.com/media") == "https://ivr.example.com"
    assert http_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert call_urls("http://127.0.0.1:8080/") == CallUrls(
        "http://127.0.0.1:8080", "ws://127.0.0.1:8080/media")
    assert call_urls("https://ivr.example.com/ivr") == CallUrls(
        "https://ivr.example.com/ivr", "wss://ivr.example.com/ivr/media")
    assert call_urls("ws://127.0.0.1:8080/media") == CallUrls(
        "http://127.0.0.1:8080", "ws://127.0.0.1:8080/media")
    with pytest.raises(IvrError, match="not a server URL"):
        call_urls("127.0.0.1:8080")


def test_action_arg_keeps_order() -> None:
    parser = argparse.ArgumentParser()
    for opt in ("--say", "--dtmf", "--barge", "--silence"):
        parser.add_argument(opt, dest="actions", action=ActionArg)
    parser.add_argument("--hangup", dest="actions", action=ActionArg, nargs="?")
    ns = parser.parse_args(
        ["--say", "yes", "--dtmf", "12#", "--barge", "800:operator", "--silence", "500", "--hangup"]
    )
    assert ns.actions == [
        Say("yes"), PressKeys("12#"), Barge("operator", 800), Silence(500), PutDown()
    ]
    with pytest.raises(ValueError):
        PressKeys("12x")


def test_empty_transcript_formats() -> None:
    t = CallTranscript(call_sid="CA1", stream_sid="MZ1", account_sid="AC1", flow=None)
    assert "CA1" in format_transcript(t)


async def test_espeak_utterance_frames() -> None:
    from ivr.speech.espeak import EspeakSynthesizer

    frames = await synthesize(EspeakSynthesizer(), "hello there", "en-us", None, 30.0)
    assert len(frames) > 10 and all(len(f) == 160 for f in frames)
    assert is_voiced(frames[0]) or is_voiced(frames[1])
