"""The caller's end of one Media Stream, behaving on the wire exactly as Twilio does.

The point is to find the server's bugs before Twilio does, so this side keeps Twilio's
habits rather than the server's expectations:

* inbound: `connected`, `start`, then one 20 ms `media` frame after another on an
  absolute clock (silence between utterances, as a real line carries), `dtmf` per
  digit, `mark` echoes, and `stop` as the last frame when the caller hangs up;
* outbound: what the server sends plays in real time from a `PlaybackBuffer`; a `mark`
  is echoed only once the audio before it has played (at once if nothing is buffered),
  and `clear` drops the buffer and echoes every pending mark immediately.

The stream is the one `/voice` named (`ivr.sim.dial`): `start` carries exactly the
`<Parameter>`s it answered, and with an auth token the upgrade is signed over its URL.
Every frame the server sent is recorded in the `CallTranscript` with its arrival time;
a bad frame is recorded as an error, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from ivr.audio.codec import FRAME_BYTES, FRAME_SECONDS, ULAW_SILENCE
from ivr.errors import IvrError, ProtocolError
from ivr.sim.dial import Dialled
from ivr.sim.playback import MarkRecord, PlaybackBuffer
from ivr.sim.transcript import CallTranscript
from ivr.sim.voice import CallerSpeech, voiced
from ivr.telephony import inbound, outbound
from ivr.telephony.wire import DEFAULT_MAX_BYTES

__all__ = ["SILENT_FRAME", "CallerLine"]

SILENT_FRAME = ULAW_SILENCE * FRAME_BYTES


class CallerLine:
    """One call's WebSocket, from `connect` to `hang_up`; the conversation talks through it."""

    def __init__(
        self,
        url: str,
        transcript: CallTranscript,
        buffer: PlaybackBuffer,
        *,
        connect_timeout: float = 10.0,
        auth_token: str | None = None,
    ) -> None:
        self.url = url
        self.transcript = transcript
        self.buffer = buffer
        self.parameters: dict[str, str] = {}
        """The `start` frame's customParameters: the `<Parameter>`s `/voice` answered."""
        self.connect_timeout = connect_timeout
        self.auth_token = auth_token
        self.signed_url = url
        self.closed = asyncio.Event()
        """Set once the socket is gone: either side closed it, or a send failed."""
        self.t_closed: float | None = None
        """When the line went dead; audio still buffered then was never heard."""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._server_closed = False
        self._hanging_up = False
        self._marks_changed = asyncio.Event()
        self._speech: deque[CallerSpeech] = deque()
        self.idle_frame: Callable[[], bytes] = lambda: SILENT_FRAME
        """What the line carries while the caller says nothing (digital silence, or noise)."""
        self._tasks: list[asyncio.Task[None]] = []
        # Strong references to fire-and-forget echo tasks, which asyncio holds weakly.
        self._background: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- the caller's side

    async def connect(self, session: aiohttp.ClientSession, dialled: Dialled) -> None:
        """Open the stream `/voice` named (the upgrade signed over its URL), send
        `connected` and `start` with its parameters, start the media clock."""
        t = self.transcript
        self.parameters = dict(dialled.parameters)
        self.signed_url = dialled.stream_url
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._ws = await session.ws_connect(
                    self.url,
                    headers=self._headers(),
                    autoclose=True,
                    autoping=True,
                    max_msg_size=DEFAULT_MAX_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise IvrError(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from exc
        # Connected and start go out before the reader runs: Twilio sends them first,
        # and nothing the server says can change them.
        await self._send(inbound.connected_message())
        await self._send(
            lambda seq: inbound.start_message(
                seq, t.stream_sid, t.account_sid, t.call_sid, self.parameters
            )
        )
        t.t_start = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read(), name="caller-read"),
            asyncio.create_task(self._media_clock(t.t_start), name="caller-clock"),
            asyncio.create_task(self._echo_marks(), name="caller-marks"),
        ]

    def speak(self, speech: CallerSpeech) -> None:
        """Queue `speech`: the media clock sends its frames instead of silence."""
        self._speech.append(speech)

    async def press(self, digit: str) -> bool:
        """Send one DTMF digit; False once the line is dead."""
        build = functools.partial(
            inbound.dtmf_message, stream_sid=self.transcript.stream_sid, digit=digit
        )
        return await self._send(build)

    async def hang_up(self) -> None:
        """End the call from this side (unless the server already did) and close the socket."""
        t = self.transcript
        tasks = self._tasks
        self._hanging_up = True
        self.t_closed = self.t_closed or time.monotonic()
        for task in tasks[1:]:
            task.cancel()
        # The clock and echo tasks are stopped before `stop` goes out, so `stop` is
        # the last thing the caller sends, as with Twilio.
        if tasks[1:]:
            await asyncio.wait(tasks[1:], timeout=2.0)
        if not self._server_closed:
            await self._send(
                lambda seq: inbound.stop_message(seq, t.stream_sid, t.account_sid, t.call_sid)
            )
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await ws.close()
        if tasks:
            tasks[0].cancel()
        if tasks or self._background:
            await asyncio.wait([*tasks[:1], *self._background], timeout=2.0)

    async def abort(self) -> None:
        """Last-resort close when the call was cut short by its timeout."""
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await ws.close()

    def _headers(self) -> dict[str, str]:
        if self.auth_token is None:
            return {}
        from twilio.request_validator import RequestValidator

        # Twilio signs the upgrade over the <Stream url> with no parameters.
        signature = RequestValidator(self.auth_token).compute_signature(self.signed_url, {})
        return {"X-Twilio-Signature": str(signature)}

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
                self.closed.set()
                return False
        return True

    # ----------------------------------------------------------------- the server's side

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        t = self.transcript
        # No per-receive timeout: a quiet server is normal (the caller is talking), and
        # aiohttp's receive timeout marks the socket abnormally closed. The whole call
        # runs under the caller's call timeout, and this task is cancelled at the end.
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
                    self.t_closed = self.t_closed or now
                self.closed.set()
                return

    def _on_frame(self, text: str, now: float) -> None:
        t = self.transcript
        try:
            message = outbound.parse_outbound(text)
        except ProtocolError as exc:
            t.errors.append(f"bad frame from server: {exc}")
            return
        if message.stream_sid != t.stream_sid:
            t.errors.append(f"frame for another stream {message.stream_sid[:40]!r} ignored")
            return
        if isinstance(message, outbound.OutMedia):
            t.frames.append((now, len(message.payload)))
            self.buffer.media(message.payload, now)
        elif isinstance(message, outbound.OutMark):
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
                inbound.inbound_mark_message, stream_sid=sid, name=record.name
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

    # ----------------------------------------------------------------- the media clock

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
            frame, speech = self._next_frame()
            now = time.monotonic()
            if speech is not None:
                if speech.t_start is None:
                    speech.t_start = now
                if speech.onset is None and voiced(frame):
                    speech.onset = now
                    t.speech_onsets.append(now)
            sent = await self._send(
                functools.partial(
                    inbound.inbound_media_message,
                    stream_sid=sid,
                    chunk=k,
                    timestamp_ms=k * 20,
                    payload=frame,
                )
            )
            if not sent:
                return
            t.media_sent += 1
            if speech is not None and speech.sent == len(speech.frames):
                speech.t_end = time.monotonic()
                speech.done.set()

    def _next_frame(self) -> tuple[bytes, CallerSpeech | None]:
        while self._speech:
            speech = self._speech[0]
            if speech.sent < len(speech.frames):
                frame = speech.frames[speech.sent]
                speech.sent += 1
                if speech.sent == len(speech.frames):
                    self._speech.popleft()
                return frame, speech
            self._speech.popleft()
            speech.done.set()
        return self.idle_frame(), None
