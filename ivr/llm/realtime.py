"""One call's Realtime session: a WebSocket to an OpenAI-compatible Realtime endpoint.

    session = await RealtimeSession.connect(http, RealtimeConfig(url, key, "gpt-realtime",
                                                                 instructions=..., tools=...))
    session.append_audio(ulaw)          # every 20 ms, never blocks
    await session.respond()             # e.g. the greeting
    async for event in session.events():
        AudioDelta(item_id, ulaw)       # µ-law to play, exactly as sent
        AudioDone(item_id) · OutputTranscript(item_id, text)
        SpeechStarted(audio_start_ms) · SpeechStopped(audio_end_ms)   # server VAD
        InputTranscriptDelta(item_id, text) · InputTranscript(item_id, text)
        FunctionCall(call_id, name, arguments_json) → await session.send_function_result(...)
        ResponseDone(status, usage)     # usage_units(usage) → the call's cost
        RealtimeError(code, message)    # one request failed; the session goes on
        Closed(reason, code)            # the last event: "closed" | "server_closed" | "dropped"
    await session.cancel(); await session.truncate(item_id, heard_ms)  # barge-in
    await session.close()

A transcription session (`RealtimeConfig(intent="transcription")`, `speech.realtime_stt`)
takes 24 kHz PCM16 through the same `append_audio`, `commit()` at end of speech, and
answers with `InputTranscriptDelta`s and one `InputTranscript` (or
`InputTranscriptFailed`).

The session is µ-law both ways (`realtime_wire.session_update`), so Twilio's frames go in
and the provider's come out untouched. `connect` returns once the provider has accepted
the session (`session.updated`), or raises a `ProviderError` (key redacted): unreachable
→ `ProviderUnavailable`, a refused upgrade (401, 404) → `ProviderHTTPError`, no session in
`connect_timeout_s` → `ProviderTimeout`, an `error` answering the update →
`ProviderBadResponse`. After that, failures are events, not exceptions: a dropped socket
is `Closed("dropped")`, and the caller of `events()` decides what to fall back to.

Sending never waits for the socket: messages go on an outbox that one writer task
drains in order, so `append_audio` costs a base64 encode and a deque append. Sends after
the socket ended are dropped (the consumer has `Closed`, or is about to get it). The
outbox holds at most `MAX_QUEUED` messages; past that, audio frames are dropped and
counted (`stats["audio_dropped"]`), control messages never are.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import structlog

from ivr.llm.realtime_wire import (
    AudioDelta,
    AudioDone,
    Closed,
    EventDecoder,
    FunctionCall,
    InputTranscript,
    InputTranscriptDelta,
    InputTranscriptFailed,
    OutputTranscript,
    RealtimeConfig,
    RealtimeError,
    RealtimeEvent,
    ResponseDone,
    SessionEvent,
    SpeechStarted,
    SpeechStopped,
    audio_append,
    audio_commit,
    connect_params,
    function_output,
    is_beta_session,
    item_truncate,
    response_cancel,
    response_create,
    session_update,
    usage_units,
)
from ivr.providers.errors import (
    ProviderBadResponse,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
)
from ivr.providers.redact import redact

__all__ = [
    "MAX_QUEUED",
    "AudioDelta",
    "AudioDone",
    "Closed",
    "FunctionCall",
    "InputTranscript",
    "InputTranscriptDelta",
    "InputTranscriptFailed",
    "OutputTranscript",
    "RealtimeConfig",
    "RealtimeError",
    "RealtimeEvent",
    "RealtimeSession",
    "ResponseDone",
    "SpeechStarted",
    "SpeechStopped",
    "usage_units",
]

log = structlog.get_logger(__name__)

PROVIDER: Final = "realtime"
# 5 s of 20 ms frames: a socket that cannot take that much is as good as dead, and the
# heartbeat will say so; until then memory stays bounded.
MAX_QUEUED: Final = 250
_SEND_TIMEOUT_S: Final = 5.0
_CLOSE_TIMEOUT_S: Final = 1.0
_ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
          aiohttp.WSMsgType.ERROR)


class RealtimeSession:
    """A connected, configured Realtime session (made by `connect`); one consumer of
    `events()`, any number of senders."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        config: RealtimeConfig,
        decoder: EventDecoder,
        beta: bool,
        pending: list[RealtimeEvent],
    ) -> None:
        self.config = config
        self.beta = beta  # the dialect the session speaks (see `realtime_wire`)
        self.stats: Counter[str] = Counter()
        self._ws = ws
        self._decoder = decoder
        self._pending = deque(pending)
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._ended = False
        self._writer: asyncio.Task[None] | None = asyncio.create_task(self._write_loop())

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, config: RealtimeConfig
    ) -> RealtimeSession:
        """Open the socket, set the session up, and return once the provider accepted it."""
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        if config.beta:
            headers["OpenAI-Beta"] = "realtime=v1"
        where = f"connect {config.url} ({config.model})"
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                ws = await http.ws_connect(
                    config.url, params=connect_params(config), headers=headers,
                    heartbeat=config.heartbeat_s,
                    timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_S),
                )
                decoder = EventDecoder()
                beta, pending = await _handshake(ws, config, decoder)
        except TimeoutError:
            await _abort(ws)
            msg = f"{where}: no session within {config.connect_timeout_s} s"
            raise ProviderTimeout(PROVIDER, redact(msg, config.api_key or "")) from None
        except aiohttp.WSServerHandshakeError as e:
            msg = redact(f"{where}: {e.status} {e.message}", config.api_key or "")
            raise ProviderHTTPError(PROVIDER, e.status, msg) from None
        except (aiohttp.ClientError, OSError) as e:
            await _abort(ws)
            msg = redact(f"{where}: {e!r}", config.api_key or "")
            raise ProviderUnavailable(PROVIDER, msg) from None
        except BaseException:
            await _abort(ws)
            raise
        log.info("realtime_connected", model=config.model, beta=beta)
        return cls(ws, config, decoder, beta, pending)

    @property
    def malformed(self) -> int:
        """Server frames that were not JSON events (skipped)."""
        return self._decoder.malformed

    # --- sending ----------------------------------------------------------------------

    def append_audio(self, audio: bytes) -> None:
        """Queue caller audio for the provider: a frame of µ-law in a conversation (its
        server VAD listens), 24 kHz PCM16 in a transcription session."""
        if self._ended or self._closing or len(self._outbox) >= MAX_QUEUED:
            self.stats["audio_dropped"] += 1
            return
        self._outbox.append(audio_append(audio))
        self._wake.set()

    async def commit(self) -> None:
        """End the input (a transcription session): what was appended gets transcribed."""
        self._send(audio_commit())

    async def send_function_result(self, call_id: str, output: str) -> None:
        """The tool's result for `call_id`, then a new response that uses it."""
        self._send(function_output(call_id, output))
        self._send(response_create())

    async def respond(self, instructions: str | None = None) -> None:
        """Ask for a response now (the greeting; or with `instructions` for this one)."""
        self._send(response_create(instructions))

    async def cancel(self) -> None:
        """Stop the response in progress (barge-in). The provider answers with
        `ResponseDone("cancelled")`, or a `RealtimeError` when none was in progress."""
        self._send(response_cancel())

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Cut the assistant's audio item to what the caller heard, so the model's
        context does not hold words that were never played."""
        self._send(item_truncate(item_id, audio_end_ms))

    def _send(self, message: dict[str, Any]) -> None:
        if self._ended or self._closing:
            self.stats["dropped_after_close"] += 1
            return
        self._outbox.append(json.dumps(message))
        self._wake.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                while self._outbox:
                    async with asyncio.timeout(_SEND_TIMEOUT_S):
                        await self._ws.send_str(self._outbox.popleft())
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
        except (TimeoutError, ConnectionError, aiohttp.ClientError) as e:
            # The reader sees the socket end (closed here if it has not) and reports it.
            self.stats["send_failed"] += 1
            log.warning("realtime_send_failed", error=redact(repr(e), self.config.api_key or ""))
            self._outbox.clear()
            await _abort(self._ws)

    async def _stop_writer(self, flush: bool) -> None:
        task, self._writer = self._writer, None
        if task is None:
            return
        if flush:
            self._wake.set()
            await asyncio.wait([task], timeout=_CLOSE_TIMEOUT_S)
        task.cancel()
        await asyncio.wait([task])

    # --- receiving --------------------------------------------------------------------

    async def events(self) -> AsyncIterator[RealtimeEvent]:
        """The provider's events until the socket ends; `Closed` is always the last."""
        while self._pending:
            yield self._pending.popleft()
        if self._ended:
            return
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                event = self._decoder.decode(msg.data)
                if event is not None and not isinstance(event, SessionEvent):
                    yield event
            elif msg.type in _ENDED:
                break
        self._ended = True
        await self._stop_writer(flush=False)
        code = self._ws.close_code
        if self._closing:
            reason = "closed"
        elif msg.type is not aiohttp.WSMsgType.ERROR and code == 1000:
            reason = "server_closed"
        else:
            reason = "dropped"
        if reason != "closed":
            log.warning("realtime_closed", reason=reason, code=code,
                        malformed=self._decoder.malformed)
        yield Closed(reason, code)

    async def close(self) -> None:
        """Send what is queued (a last cancel, say), then close the socket; a running
        `events()` ends with `Closed("closed")`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        await self._stop_writer(flush=not self._ended)
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S * 2):
                await self._ws.close()
        except TimeoutError:
            log.warning("realtime_close_timeout")


async def _handshake(
    ws: aiohttp.ClientWebSocketResponse, config: RealtimeConfig, decoder: EventDecoder
) -> tuple[bool, list[RealtimeEvent]]:
    """Wait for `session.created`, answer it with the session update in the dialect the
    server speaks, and wait for `session.updated`; events before that are kept."""
    pending: list[RealtimeEvent] = []
    beta = config.beta
    updated = False
    while True:
        msg = await ws.receive()
        if msg.type in _ENDED:
            raise ProviderUnavailable(PROVIDER, f"socket closed before the session was set up "
                                                f"(code {ws.close_code})")
        if msg.type is not aiohttp.WSMsgType.TEXT:
            continue
        event = decoder.decode(msg.data)
        if isinstance(event, SessionEvent):
            if event.kind == "session.created" and not updated:
                # `transcription_session.created` is beta by its name alone.
                detected = True if decoder.beta_seen else is_beta_session(event.session)
                beta = config.beta if detected is None else detected
                await ws.send_str(json.dumps(session_update(config, beta)))
                updated = True
            elif event.kind == "session.updated" and updated:
                return beta, pending
        elif isinstance(event, RealtimeError):
            msg_text = f"session refused: {event.code}: {event.message}"
            raise ProviderBadResponse(PROVIDER, redact(msg_text, config.api_key or ""))
        elif event is not None:
            pending.append(event)


async def _abort(ws: aiohttp.ClientWebSocketResponse | None) -> None:
    if ws is None or ws.closed:
        return
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await ws.close()
    except (TimeoutError, ConnectionError, aiohttp.ClientError):
        pass  # giving up on a socket that is already failing: nothing more to learn
