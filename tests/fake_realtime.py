"""A local Realtime WebSocket server for tests, speaking the real wire format.

    async with start_fake_realtime() as fake:
        fake.replies.append(RealtimeReply(audio=ulaw, transcript="Hello"))
        ... RealtimeConfig(url=fake.url, api_key="sk-test", model="gpt-realtime") ...
        await fake.caller_spoke("book a table")   # server VAD: started, stopped, transcript
        await fake.wait_until(lambda f: f.cancels == 1)

GA event names by default; `fake.beta = True` (before connecting) speaks the beta dialect
(`response.audio.delta`, a flat session) and refuses a GA-shaped `session.update`, as the
real server refuses unknown parameters, and vice versa.

What it records: `session_updates`, `audio` (every `input_audio_buffer.append`, decoded),
`received` (every client event, in order), `response_creates`, `function_outputs`
(`(call_id, output)`), `cancels`, `truncates` (`(item_id, content_index, audio_end_ms)`),
`headers` and `query` of each connection, `first_audio_at` (when each reply's first audio
delta went out; `RealtimeReply.first_delay_s` holds it back: the model's time to first
audio). Replies are scripted (`replies`), one per
`response.create` or per simulated caller turn; with none queued a response is empty.
Faults: `fail_connect` (401), `silent` (no `session.created`), `refuse_session` (an
`error` for the update, echoing a key as some providers do), `hang_up()` (a normal close),
`drop()` (the socket closed without a close frame), `send_error()`, `send_raw()`
(anything, malformed frames too).

Transcription mode: a connection to `?intent=transcription` is a transcription session,
set up by a `session.update` of `type: "transcription"` (beta: `transcription_session.update`,
answered `transcription_session.created` / `.updated`; either dialect refuses the other's
shape and the conversation shape). Its audio is 24 kHz PCM16 (in `audio`, and per
committed buffer in `committed`). On `input_audio_buffer.commit` (100 ms or more, as the
real API wants) it answers `committed`, then the next scripted `TranscriptReply`
(`transcripts`): its deltas, then `completed` with its usage, or `failed`; its `hold`
delays the completed event until set. `transcript_delta()` sends a delta at any time,
as a streaming transcriber does while the caller speaks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

__all__ = ["DEFAULT_USAGE", "TRANSCRIPTION_USAGE", "FakeRealtime", "RealtimeReply",
           "TranscriptReply", "start_fake_realtime"]

DEFAULT_USAGE: dict[str, Any] = {
    "total_tokens": 180, "input_tokens": 120, "output_tokens": 60,
    "input_token_details": {
        "text_tokens": 100, "audio_tokens": 20, "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0},
    },
    "output_token_details": {"text_tokens": 15, "audio_tokens": 45},
}

# A transcription's usage as gpt-4o-transcribe reports it (tokens).
TRANSCRIPTION_USAGE: dict[str, Any] = {
    "type": "tokens", "total_tokens": 31, "input_tokens": 25, "output_tokens": 6,
    "input_token_details": {"text_tokens": 7, "audio_tokens": 18},
}
_COMMIT_MIN_BYTES = 24000 * 2 // 10  # 100 ms of 24 kHz PCM16

# GA name → beta name, where they differ.
_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "conversation.item.added": "conversation.item.created",
}
_BETA_ONLY_KEYS = {"modalities", "input_audio_format", "output_audio_format", "voice",
                   "input_audio_transcription", "turn_detection"}
_GA_ONLY_KEYS = {"type", "audio", "output_modalities"}


@dataclass
class RealtimeReply:
    """One scripted response: µ-law audio with its transcript, or a function call."""

    audio: bytes = b""
    transcript: str = ""
    function_call: tuple[str, str] | None = None  # (name, arguments JSON)
    usage: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    chunk: int = 160  # µ-law bytes per audio delta (160: one 20 ms frame)
    delay_s: float = 0.0  # between deltas
    # When given, the stream pauses after the first delta until it is set (or the
    # response is cancelled): a reply the caller can be made to talk over.
    hold: asyncio.Event | None = None
    # The model's time to first audio: a fixed wait before the first audio delta
    # (cancellable, like `delay_s`); when it went out is kept in `first_audio_at`.
    first_delay_s: float = 0.0


@dataclass
class TranscriptReply:
    """What the next committed buffer is transcribed as."""

    text: str = ""
    deltas: list[str] | None = None  # None: the text word by word
    usage: dict[str, Any] | None = None  # on the completed event; None: no usage key
    hold: asyncio.Event | None = None  # the completed event waits until it is set
    fail: str | None = None  # an error code: `failed` instead of `completed`

    def pieces(self) -> list[str]:
        if self.deltas is not None:
            return self.deltas
        words = self.text.split(" ")
        return [w if i == 0 else f" {w}" for i, w in enumerate(words)] if self.text else []


class FakeRealtime:
    def __init__(self) -> None:
        self.beta = False
        self.fail_connect = False
        self.silent = False  # accept the socket, never send `session.created`
        self.refuse_session: str | None = None  # answer session.update with this error
        self.url = ""
        self.replies: deque[RealtimeReply] = deque()
        self.session_updates: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.received: list[dict[str, Any]] = []
        self.response_creates: list[dict[str, Any]] = []
        self.function_outputs: list[tuple[str, str]] = []
        self.cancels = 0
        self.truncates: list[tuple[str, int, int]] = []
        self.headers: list[dict[str, str]] = []
        self.query: list[dict[str, str]] = []
        self.responses_done: list[str] = []  # the status of each response.done sent
        self.transcripts: deque[TranscriptReply] = deque()
        self.committed: list[bytes] = []  # a transcription session's buffer at each commit
        self.transcription = False  # the current connection asked for intent=transcription
        self._buffer = bytearray()  # appended since the last commit
        self._item = ""  # the transcription item being spoken into
        self.first_audio_at: list[float] = []  # time.monotonic() of each reply's first delta
        self._changed = asyncio.Condition()
        self._ws: web.WebSocketResponse | None = None
        self._request: web.Request | None = None
        self._responding: asyncio.Task[None] | None = None
        self._cancel = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._n = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._connect)
        return app

    # --- test-side controls -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """A client's socket is open now."""
        return self._ws is not None and not self._ws.closed

    async def wait_until(self, check: Callable[[FakeRealtime], bool]) -> None:
        """Until `check(fake)` holds (re-checked on every client event and response);
        2 s at most, so a test that waits for what never comes fails instead of hanging."""
        async with asyncio.timeout(2.0), self._changed:
            await self._changed.wait_for(lambda: check(self))

    async def caller_spoke(self, transcript: str, ms: int = 800) -> None:
        """Server VAD heard the caller: speech started/stopped over the last `ms` of the
        audio appended so far, the buffer committed, its transcription (a delta, then
        completed), and the next scripted response, as `create_response` does."""
        end = len(self.audio) // 8  # 8 bytes of µ-law per ms
        item = self._id("item")
        await self.speech_started(max(0, end - ms), item)
        await self._send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end,
                          "item_id": item})
        await self._send({"type": "input_audio_buffer.committed", "item_id": item,
                          "previous_item_id": None})
        base = {"item_id": item, "content_index": 0}
        await self._send({"type": "conversation.item.input_audio_transcription.delta", **base,
                          "delta": transcript})
        await self._send({"type": "conversation.item.input_audio_transcription.completed",
                          **base, "transcript": transcript})
        self._start_response()

    def respond(self) -> None:
        """Start the next scripted response on the server's own initiative."""
        self._start_response()

    async def speech_started(self, audio_start_ms: int | None = None, item_id: str = "") -> None:
        """Only `input_audio_buffer.speech_started` (the caller talking over a reply)."""
        start = len(self.audio) // 8 if audio_start_ms is None else audio_start_ms
        await self._send({"type": "input_audio_buffer.speech_started",
                          "audio_start_ms": start, "item_id": item_id or self._id("item")})

    async def transcript_delta(self, text: str) -> None:
        """A transcript delta for the audio being appended (before any commit)."""
        self._item = self._item or self._id("item")
        await self._send({"type": "conversation.item.input_audio_transcription.delta",
                          "item_id": self._item, "content_index": 0, "delta": text})

    async def send_error(self, code: str, message: str) -> None:
        await self._send({"type": "error", "event_id": self._id("event"), "error": {
            "type": "invalid_request_error", "code": code, "message": message, "param": None,
        }})

    async def send_raw(self, text: str) -> None:
        assert self._ws is not None, "no client connected"
        await self._ws.send_str(text)

    async def hang_up(self) -> None:
        """Close the socket properly (a close frame, code 1000), as a server ending a
        session (its time limit, say)."""
        assert self._ws is not None, "no client connected"
        await self._ws.close()

    def drop(self) -> None:
        """Close the connection under the socket: no close frame, as a network drop."""
        assert self._request is not None and self._request.transport is not None
        self._request.transport.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._ws is not None and not self._ws.closed:
            with suppress(ConnectionError):
                await self._ws.close()

    # --- the connection ---------------------------------------------------------------

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        self.query.append(dict(request.query))
        self.transcription = request.query.get("intent") == "transcription"
        self._buffer, self._item = bytearray(), ""
        if self.fail_connect:
            body = {"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                              "message": "Incorrect API key provided"}}
            return web.json_response(body, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws, self._request = ws, request
        if not self.silent:
            await self._send({"type": self._session_event("created"),
                              "session": self._session(request)})
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await self._on_event(json.loads(msg.data))
        await self._notify()  # for `wait_until(lambda f: not f.connected)`
        return ws

    def _session_event(self, what: str) -> str:
        prefix = "transcription_session" if self.transcription and self.beta else "session"
        return f"{prefix}.{what}"

    def _session(self, request: web.Request) -> dict[str, Any]:
        model = request.query.get("model", "")
        if self.transcription:
            vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                   "silence_duration_ms": 500}
            if self.beta:
                return {"id": self._id("sess"), "object": "realtime.transcription_session",
                        "modalities": ["audio", "text"], "input_audio_format": "pcm16",
                        "input_audio_transcription": None, "turn_detection": vad}
            return {"type": "transcription", "object": "realtime.transcription_session",
                    "id": self._id("sess"), "audio": {"input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": None, "turn_detection": vad}}}
        if self.beta:
            return {"id": self._id("sess"), "object": "realtime.session", "model": model,
                    "modalities": ["text", "audio"], "input_audio_format": "pcm16",
                    "output_audio_format": "pcm16", "voice": "alloy", "instructions": ""}
        return {"type": "realtime", "object": "realtime.session", "id": self._id("sess"),
                "model": model, "output_modalities": ["audio"], "instructions": "",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                          "output": {"format": {"type": "audio/pcm", "rate": 24000},
                                     "voice": "alloy"}}}

    async def _on_event(self, event: dict[str, Any]) -> None:
        self.received.append(event)
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            audio = base64.b64decode(event["audio"])
            self.audio += audio
            self._buffer += audio
        elif kind in ("session.update", "transcription_session.update"):
            if kind != self._session_event("update"):
                await self.send_error("invalid_request_error",
                                      f"Invalid event for this session: '{kind}'.")
            else:
                await self._session_update(event.get("session") or {})
        elif kind == "input_audio_buffer.commit" and self.transcription:
            await self._commit()
        elif kind == "response.create":
            self.response_creates.append(event)
            self._start_response()
        elif kind == "response.cancel":
            self.cancels += 1
            if self._responding is None or self._responding.done():
                await self.send_error("response_cancel_not_active",
                                      "Cancellation failed: no active response found")
            self._cancel.set()
        elif kind == "conversation.item.truncate":
            self.truncates.append((event["item_id"], event["content_index"],
                                   event["audio_end_ms"]))
            await self._send({"type": "conversation.item.truncated", **{
                k: event[k] for k in ("item_id", "content_index", "audio_end_ms")}})
        elif kind == "conversation.item.create":
            item = event.get("item") or {}
            if item.get("type") == "function_call_output":
                self.function_outputs.append((item["call_id"], item["output"]))
            await self._send({"type": "conversation.item.added",
                              "item": {"id": self._id("item"), **item}})
        await self._notify()

    async def _session_update(self, session: dict[str, Any]) -> None:
        self.session_updates.append(session)
        if self.refuse_session:
            await self.send_error(self.refuse_session, "Invalid session for sk-test-secret-key")
            return
        wrong = set(session) & (_GA_ONLY_KEYS if self.beta else _BETA_ONLY_KEYS)
        if wrong:
            await self.send_error("unknown_parameter",
                                  f"Unknown parameter: 'session.{sorted(wrong)[0]}'.")
            return
        kind = "transcription" if self.transcription else "realtime"
        if not self.beta and session.get("type") != kind:
            await self.send_error("invalid_value", f"Invalid value for 'session.type': "
                                                   f"{session.get('type')!r} (want {kind!r}).")
            return
        await self._send({"type": self._session_event("updated"), "session": session})

    # --- transcription ----------------------------------------------------------------

    async def _commit(self) -> None:
        if len(self._buffer) < _COMMIT_MIN_BYTES:
            await self.send_error("input_audio_buffer_commit_empty",
                                  "Error committing input audio buffer: buffer too small.")
            return
        item = self._item or self._id("item")
        self.committed.append(bytes(self._buffer))
        self._buffer, self._item = bytearray(), ""
        await self._send({"type": "input_audio_buffer.committed", "item_id": item,
                          "previous_item_id": None})
        reply = self.transcripts.popleft() if self.transcripts else TranscriptReply()
        task = asyncio.create_task(self._transcribe(item, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transcribe(self, item: str, reply: TranscriptReply) -> None:
        base = {"item_id": item, "content_index": 0}
        for piece in reply.pieces():
            await self._send({"type": "conversation.item.input_audio_transcription.delta",
                              **base, "delta": piece})
        if reply.hold is not None:
            await reply.hold.wait()
        if reply.fail is not None:
            await self._send({"type": "conversation.item.input_audio_transcription.failed",
                              **base, "error": {"type": "transcription_error",
                                                "code": reply.fail, "message": "failed"}})
        else:
            done: dict[str, Any] = {
                "type": "conversation.item.input_audio_transcription.completed", **base,
                "transcript": reply.text}
            if reply.usage is not None:
                done["usage"] = reply.usage
            await self._send(done)
        await self._notify()

    # --- responses --------------------------------------------------------------------

    def _start_response(self) -> None:
        reply = self.replies.popleft() if self.replies else RealtimeReply()
        self._cancel.clear()
        task = asyncio.create_task(self._respond(reply))
        self._responding = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond(self, reply: RealtimeReply) -> None:
        rid = self._id("resp")
        await self._send({"type": "response.created", "response": {
            "id": rid, "object": "realtime.response", "status": "in_progress", "output": []}})
        if reply.function_call is not None:
            item = await self._function_call(rid, *reply.function_call)
            status = "completed"
        else:
            item, status = await self._audio(rid, reply)
        await self._send({"type": "response.done", "response": {
            "id": rid, "object": "realtime.response", "status": status, "output": [item],
            "usage": reply.usage}})
        self.responses_done.append(status)
        await self._notify()

    async def _function_call(self, rid: str, name: str, arguments: str) -> dict[str, Any]:
        call_id, item_id = self._id("call"), self._id("item")
        item = {"id": item_id, "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""}
        where = {"response_id": rid, "item_id": item_id, "output_index": 0, "call_id": call_id}
        await self._send({"type": "response.output_item.added", "response_id": rid,
                          "output_index": 0, "item": item})
        for i in range(0, len(arguments), 8):
            await self._send({"type": "response.function_call_arguments.delta", **where,
                              "delta": arguments[i : i + 8]})
        done: dict[str, Any] = {"type": "response.function_call_arguments.done", **where,
                                "arguments": arguments}
        if not self.beta:
            done["name"] = name  # GA only: beta leaves the name to the output item
        await self._send(done)
        item = {**item, "status": "completed", "arguments": arguments}
        await self._send({"type": "response.output_item.done", "response_id": rid,
                          "output_index": 0, "item": item})
        return item

    async def _audio(self, rid: str, reply: RealtimeReply) -> tuple[dict[str, Any], str]:
        item_id = self._id("item")
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message",
                                "role": "assistant", "status": "in_progress", "content": []}
        part = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self._send({"type": "response.output_item.added", "response_id": rid,
                          "output_index": 0, "item": item})
        await self._send({"type": "response.content_part.added", **part,
                          "part": {"type": "audio", "transcript": ""}})
        if reply.first_delay_s and await self._cancelled(None, reply.first_delay_s):
            return await self._incomplete(rid, item)
        for n, i in enumerate(range(0, len(reply.audio), reply.chunk)):
            chunk = reply.audio[i : i + reply.chunk]
            if n == 0:
                self.first_audio_at.append(time.monotonic())
            await self._send({"type": "response.output_audio.delta", **part,
                              "delta": base64.b64encode(chunk).decode()})
            if await self._cancelled(reply.hold if n == 0 else None, reply.delay_s):
                return await self._incomplete(rid, item)
        await self._send({"type": "response.output_audio_transcript.delta", **part,
                          "delta": reply.transcript})
        await self._send({"type": "response.output_audio_transcript.done", **part,
                          "transcript": reply.transcript})
        await self._send({"type": "response.output_audio.done", **part})
        content = [{"type": "audio", "transcript": reply.transcript}]
        await self._send({"type": "response.content_part.done", **part, "part": content[0]})
        item = {**item, "status": "completed", "content": content}
        await self._send({"type": "response.output_item.done", "response_id": rid,
                          "output_index": 0, "item": item})
        return item, "completed"

    async def _incomplete(self, rid: str, item: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A reply cancelled before its end: its item closed as incomplete."""
        item = {**item, "status": "incomplete"}
        await self._send({"type": "response.output_item.done", "response_id": rid,
                          "output_index": 0, "item": item})
        return item, "cancelled"

    async def _cancelled(self, hold: asyncio.Event | None, delay_s: float) -> bool:
        """Wait out the pause (until `hold` is set, or `delay_s`); True when a cancel
        came first."""
        if self._cancel.is_set():
            return True
        if hold is None and not delay_s:
            return False
        waits = {asyncio.ensure_future(self._cancel.wait())}
        if hold is not None:
            waits.add(asyncio.ensure_future(hold.wait()))
        try:
            await asyncio.wait(waits, timeout=None if hold is not None else delay_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self._cancel.is_set()

    # --- plumbing ---------------------------------------------------------------------

    async def _send(self, event: dict[str, Any]) -> None:
        assert self._ws is not None, "no client connected"
        if self.beta:
            event = {**event, "type": _BETA_NAMES.get(event["type"], event["type"])}
        event.setdefault("event_id", self._id("event"))
        if not self._ws.closed:
            with suppress(ConnectionError):
                await self._ws.send_str(json.dumps(event))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"


@asynccontextmanager
async def start_fake_realtime() -> AsyncIterator[FakeRealtime]:
    """Run a `FakeRealtime` on 127.0.0.1 (a free port); `fake.url` is its ws:// URL."""
    fake = FakeRealtime()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/v1/realtime")).replace("http://", "ws://", 1)
    try:
        yield fake
    finally:
        await fake.close()
        await server.close()
