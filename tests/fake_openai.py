"""A local OpenAI-compatible server for tests, with scriptable replies and faults.

    async with start_fake_openai() as fake:
        fake.fail("speech", Fault("status", status=429, retry_after="2"))
        fake.chat_replies.append(ChatReply(tool_calls=[ToolCall("lookup", '{"id": 7}')]))
        ... ProviderConfig(base_url=fake.base_url, ...) ...

Routes (under `/v1`): `POST /audio/transcriptions` ("transcriptions"),
`POST /audio/speech` ("speech"), `POST /chat/completions` ("chat"). Each request is
counted in `fake.requests[route]` (faulted ones too), its arrival time (monotonic) kept
in `fake.arrivals[route]` and its body in `fake.bodies[route]`. A route first consumes
one-shot faults queued by `fail()`, then the persistent `outage` fault if set, and
otherwise answers normally.

Speech-to-speech: a request with `modalities` holding "audio" is answered from a reply's
`audio` (PCM16 24 kHz) as `delta.audio` chunks, each its own base64 piece (as OpenAI
sends them) with a share of `audio_transcript`; the provider's `audio_id` on the first and
`expires_at` on the last. `audio_hold` stops the stream after `audio_hold_after` chunks
until it is set, so a test can act while the reply is provably unfinished. `first_delay_s`
holds a streamed reply's first chunk back by a fixed time (the model's time to first token).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["ChatReply", "FakeOpenAI", "Fault", "ToolCall", "start_fake_openai", "tone_pcm"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = Literal["transcriptions", "speech", "chat"]
FaultKind = Literal[
    "status",  # `status` with an OpenAI-style error body and optional Retry-After
    "reset",  # close the connection without answering
    "hang",  # never answer (until `delay` passes or the server closes)
    "slow_first_byte",  # wait `delay`, then answer normally
    "malformed_json",  # 200, application/json, not JSON
    "wrong_content_type",  # 200, text/html
]


@dataclass
class Fault:
    kind: FaultKind
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as the API sends it
    id: str = ""


@dataclass
class ChatReply:
    """One scripted chat completion, served as JSON or as an SSE stream as requested."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 10
    completion_tokens: int = 5
    cached_tokens: int = 0  # of prompt_tokens (prompt_tokens_details.cached_tokens)
    # Streaming: how many characters of content / tool arguments go in each delta, so a
    # client's reassembly across chunks is exercised.
    split: int = 4
    # Streaming: pause this long once the content sent so far ends with `pause_after`
    # (a slow model mid-reply), so a test can see what the client did before the rest.
    pause_after: str | None = None
    pause_s: float = 0.0
    # Audio (served only when the request asks for the audio modality): PCM16 24 kHz,
    # `audio_chunk` bytes a delta (odd sizes split samples across deltas, as real
    # base64 pieces may).
    audio: bytes | None = None
    audio_transcript: str = ""
    audio_id: str = "audio_1"
    audio_chunk: int = 4800
    audio_expires_at: int | None = None  # None: an hour from now
    audio_tokens_in: int = 0  # of prompt_tokens (prompt_tokens_details.audio_tokens)
    audio_tokens_out: int = 0  # of completion_tokens (completion_tokens_details)
    audio_hold: asyncio.Event | None = None  # wait for it after `audio_hold_after` chunks
    audio_hold_after: int = 1
    audio_bad_chunks: tuple[int, ...] = ()  # these chunks' data is sent as invalid base64
    # Streaming: the model's time to first token, a fixed wait after the response headers
    # and before the first chunk (`python -m tests.bench_llm_modes` compares modes at one).
    first_delay_s: float = 0.0


def tone_pcm(seconds: float, rate: int = 24000, freq: float = 440.0) -> bytes:
    """A sine tone as PCM16 little-endian mono: recognisable, non-silent test audio."""
    n = int(seconds * rate)
    return struct.pack(
        f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)
        self._arrived = asyncio.Condition()
        self.bodies: defaultdict[str, list[Any]] = defaultdict(list)
        self.headers: defaultdict[str, list[dict[str, str]]] = defaultdict(list)
        self.faults: defaultdict[str, deque[Fault]] = defaultdict(deque)
        self.outage: dict[str, Fault] = {}
        # Transcriptions: answered from the queue, else `transcript`.
        self.transcripts: deque[str] = deque()
        self.transcript = "hello world"
        # Reported as the transcription's `usage` ({"type": "duration"}) when set, as
        # Whisper does: the seconds the provider bills.
        self.transcription_seconds: float | None = None
        # Speech: `speech_pcm` (default: 0.5 s tone) cut into `speech_chunk_sizes` (cycled)
        # with `speech_chunk_delay` between writes; when `speech_hold` is given the stream
        # pauses after the first chunk until it is set. `speech_finished` counts streams
        # fully written.
        self.speech_pcm: bytes | None = None
        self.speech_chunk_sizes: list[int] = [4800]
        self.speech_chunk_delay = 0.0
        self.speech_hold: asyncio.Event | None = None
        self.speech_finished = 0
        # Chat: scripted replies in order; with none queued, an echo of the last message.
        self.chat_replies: deque[ChatReply] = deque()
        # time.monotonic() when each streamed reply started and when its [DONE] went out.
        self.chat_stream_started: list[float] = []
        self.chat_stream_done: list[float] = []
        self.base_url = ""
        # Requests being handled right now, and the most at once (concurrency limits).
        self.active = 0
        self.max_active = 0
        self._closing = asyncio.Event()
        self._calls = 0

    def fail(self, route: Route, *faults: Fault) -> None:
        """Queue one-shot faults for the next requests on `route`."""
        self.faults[route].extend(faults)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._track])
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    def close(self) -> None:
        """Release hanging handlers so the server shuts down promptly."""
        self._closing.set()

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await handler(request)
        finally:
            self.active -= 1

    async def wait_requests(self, route: str, count: int) -> None:
        """Until `count` requests have reached `route` (no polling: a condition)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: self.requests[route] >= count)

    async def _fault(self, route: str, request: web.Request) -> web.StreamResponse | None:
        self.requests[route] += 1
        self.arrivals[route].append(time.monotonic())
        async with self._arrived:
            self._arrived.notify_all()
        self.headers[route].append(dict(request.headers))
        fault = self.faults[route].popleft() if self.faults[route] else self.outage.get(route)
        if fault is None:
            return None
        if fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = {"error": {"message": f"scripted {fault.status}", "type": "fake"}}
            return web.json_response(body, status=fault.status, headers=headers)
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPInternalServerError()  # never reaches the closed socket
        if fault.kind == "hang":
            try:
                await asyncio.wait_for(self._closing.wait(), fault.delay or 3600)
            except TimeoutError:
                pass
            return web.json_response({"error": {"message": "too late"}}, status=504)
        if fault.kind == "slow_first_byte":
            try:
                await asyncio.wait_for(self._closing.wait(), fault.delay)
            except TimeoutError:
                pass
            return None
        if fault.kind == "malformed_json":
            return web.Response(text='{"text": "hel', content_type="application/json")
        return web.Response(text="<html>gateway</html>", content_type="text/html")

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        form: dict[str, Any] = {}
        post = await request.post()
        for key, value in post.items():
            form[key] = value.file.read() if isinstance(value, web.FileField) else value
        faulted = await self._fault("transcriptions", request)
        self.bodies["transcriptions"].append(form)
        if faulted is not None:
            return faulted
        text = self.transcripts.popleft() if self.transcripts else self.transcript
        reply: dict[str, Any] = {"text": text}
        if self.transcription_seconds is not None:
            reply["usage"] = {"type": "duration", "seconds": self.transcription_seconds}
        return web.json_response(reply)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        faulted = await self._fault("speech", request)
        self.bodies["speech"].append(body)
        if faulted is not None:
            return faulted
        pcm = self.speech_pcm if self.speech_pcm is not None else tone_pcm(0.5)
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        pos, i = 0, 0
        while pos < len(pcm):
            size = self.speech_chunk_sizes[i % len(self.speech_chunk_sizes)]
            await resp.write(pcm[pos : pos + size])
            pos, i = pos + size, i + 1
            if i == 1 and self.speech_hold is not None:
                await self.speech_hold.wait()
            if self.speech_chunk_delay:
                await asyncio.sleep(self.speech_chunk_delay)
        await resp.write_eof()
        self.speech_finished += 1
        return resp

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        faulted = await self._fault("chat", request)
        self.bodies["chat"].append(body)
        if faulted is not None:
            return faulted
        if self.chat_replies:
            reply = self.chat_replies.popleft()
        else:
            messages = body.get("messages") or [{}]
            reply = ChatReply(content=f"echo: {messages[-1].get('content', '')}")
        self._calls += 1
        for n, call in enumerate(reply.tool_calls):
            call.id = call.id or f"call_{self._calls}_{n}"
        model = body.get("model", "fake")
        if body.get("stream"):
            return await self._chat_stream(request, reply, model, body)
        return web.json_response(_completion(reply, model, self._calls))

    async def _chat_stream(
        self, request: web.Request, reply: ChatReply, model: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        cid = f"chatcmpl-{self._calls}"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage", True))

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": cid, "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        self.chat_stream_started.append(time.monotonic())
        if reply.first_delay_s:
            await asyncio.sleep(reply.first_delay_s)
        await send({"role": "assistant", "content": ""})
        sent = ""
        paused = False
        for piece in _pieces(reply.content, reply.split):
            await send({"content": piece})
            sent += piece
            if reply.pause_after and not paused and sent.endswith(reply.pause_after):
                paused = True
                await asyncio.sleep(reply.pause_s)
        if reply.audio is not None and "audio" in (body.get("modalities") or []):
            for audio in _audio_deltas(reply):
                hold = audio.pop("hold", False)
                await send({"audio": audio})
                if hold:
                    await self._hold(reply.audio_hold)
        for n, call in enumerate(reply.tool_calls):
            await send({"tool_calls": [{
                "index": n, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]})
            for piece in _pieces(call.arguments, reply.split):
                await send({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
        await send({}, _finish(reply))
        if include_usage:
            usage = {"id": cid, "object": "chat.completion.chunk", "model": model,
                     "choices": [], "usage": _usage(reply)}
            await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        self.chat_stream_done.append(time.monotonic())
        await resp.write_eof()
        return resp

    async def _hold(self, event: asyncio.Event | None) -> None:
        """Until `event` is set or the server closes (a forgotten hold must not hang it)."""
        if event is None:
            return
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


def _audio_deltas(reply: ChatReply) -> list[dict[str, Any]]:
    """The reply's `delta.audio` objects in order; "hold" marks where the stream waits."""
    pcm = reply.audio or b""
    size = max(1, reply.audio_chunk)
    chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
    words = _pieces(reply.audio_transcript,
                    -(-len(reply.audio_transcript) // max(1, len(chunks))))
    out: list[dict[str, Any]] = []
    for i, chunk in enumerate(chunks):
        audio: dict[str, Any] = {"data": ("!!not*base64" if i in reply.audio_bad_chunks
                                          else base64.b64encode(chunk).decode())}
        if i == 0:
            audio["id"] = reply.audio_id
        if i < len(words):
            audio["transcript"] = words[i]
        if reply.audio_hold is not None and i + 1 == reply.audio_hold_after:
            audio["hold"] = True
        out.append(audio)
    expires = reply.audio_expires_at
    out.append({"expires_at": expires if expires is not None else int(time.time()) + 3600,
                **({"transcript": "".join(words[len(chunks):])}
                   if len(words) > len(chunks) else {})})
    if len(chunks) == 0:
        out[0]["id"] = reply.audio_id
    return out


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


def _finish(reply: ChatReply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(reply: ChatReply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
    }
    if reply.audio_tokens_in:
        usage["prompt_tokens_details"]["audio_tokens"] = reply.audio_tokens_in
    if reply.audio_tokens_out:
        usage["completion_tokens_details"] = {"audio_tokens": reply.audio_tokens_out}
    return usage


def _completion(reply: ChatReply, model: str, n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return {
        "id": f"chatcmpl-{n}", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
        "usage": _usage(reply),
    }


@asynccontextmanager
async def start_fake_openai() -> AsyncIterator[FakeOpenAI]:
    """Run a `FakeOpenAI` on 127.0.0.1 (a free port); `fake.base_url` ends in `/v1`."""
    fake = FakeOpenAI()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.base_url = str(server.make_url("/v1"))
    try:
        yield fake
    finally:
        fake.close()
        if fake.speech_hold is not None:
            fake.speech_hold.set()
        await server.close()
