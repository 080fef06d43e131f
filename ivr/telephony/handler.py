"""`GET /media`: one Twilio Media Stream per WebSocket.

The handler is a plain `async for msg in ws` loop. It never awaits anything slow per
frame: if we read too slowly Twilio drops inbound audio. A bad frame is logged (the
first few per call, then sampled), counted, and skipped; the call goes on. Anything
unexpected ends this call cleanly with its record written, and never another call.

What no frame can do is cost us without bound (`telephony.limits`): a message over the
size limit (closed: 1009), audio faster than real time (`flood`), a socket that never
sends `start` (`no_start`, both closed: 1008), or a call that goes quiet (`idle`,
closed: 1001) each end this connection, counted; its call, if any, ends as dropped.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from ivr.errors import ProtocolError, ProtocolReason
from ivr.server.admission import ADMISSION, StreamSlot
from ivr.server.services import SERVICES, Services
from ivr.session.call import CallSession
from ivr.store.db import DROPPED
from ivr.telephony import twiml
from ivr.telephony.inbound import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    media_fields,
    parse_inbound,
)
from ivr.telephony.limits import MediaLimits, StreamGuard
from ivr.telephony.socket import MediaSocket
from ivr.telephony.stream_token import StartRejected

log = structlog.get_logger("ivr.media")

_LOGGED_ERRORS = 10  # per connection, then one in 100


class MediaConnection:
    """Protocol state of one WebSocket: before start, in a call, stopped."""

    def __init__(
        self, services: Services, ws: web.WebSocketResponse, limits: MediaLimits,
        slot: StreamSlot,
    ) -> None:
        self.services = services
        self.slot = slot
        self.ws = ws
        self.session: CallSession | None = None
        self.errors = 0
        self.log = log
        self.limits = limits
        self.guard = StreamGuard(limits)
        self.end_reason = DROPPED
        """Why the call ends if the stream goes without `stop` (the record's end_reason)."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[bool] | None = None
        self.busy = False
        """The read loop is awaiting on a frame: later ones wait their turn in the queue."""
        self.lane_off = False
        """A frame needed the read loop: every later one takes the queue too."""

    def error(self, reason: ProtocolReason, message: str) -> None:
        self.errors += 1
        self.services.counters[f"protocol_error.{reason}"] += 1
        self.services.metrics.protocol_error(reason)
        if self.session is not None:
            self.session.stats["protocol_errors"] += 1
        if self.errors <= _LOGGED_ERRORS or self.errors % 100 == 0:
            self.log.warning("protocol_error", reason=reason, detail=message[:200],
                             count=self.errors)

    def on_text_now(self, data: str) -> bool:
        """The socket's fast lane (`telephony.socket`): a call's media, marks and keys
        handled as they are read, with no task switch. Anything else, anything while the
        read loop awaits an earlier frame, and everything once a frame needs the read
        loop (a flood to refuse, a failure) is left to the queue (False): the loop stops
        reading where it must, so the close handshake drains what the peer still sends.
        """
        if self.busy or self.lane_off:
            return False
        session = self.session
        if session is None:
            return False
        fields = media_fields(data, self.limits.max_message_bytes)
        if fields is not None:
            # The hot path: `on_call_frame`'s checks for a media frame, inline, and the
            # audio straight to the call's inbound side (no `Media` built).
            guard = self.guard
            guard.received()
            sid, timestamp, audio = fields
            try:
                if sid != session.stream_sid:
                    self.error("bad_stream_sid", f"streamSid {sid!r} is not this call's")
                    return True
                if not guard.floods(len(audio)):
                    session.inbound.on_audio(audio, timestamp)
                    return True
            except Exception:
                pass  # handled again by the read loop, which logs it and ends this call
            self.lane_off = True
            return False
        try:
            msg = parse_inbound(data, max_bytes=self.limits.max_message_bytes)
        except ProtocolError as exc:
            self.guard.received()
            self.error(exc.reason, exc.message)
            return True
        if not isinstance(msg, Media | Dtmf | Mark):
            return False  # start, stop, connected: the read loop's
        self.guard.received()
        try:
            if self.on_call_frame(msg, lane=True):
                return True
        except Exception:
            # Handled again by the read loop, which logs it and ends this call only.
            pass
        self.lane_off = True
        return False

    def on_call_frame(self, msg: Media | Dtmf | Mark, *, lane: bool = False) -> bool:
        """A call's frame; False (only in the lane) when the read loop must take it."""
        session = self.session
        if session is None:
            self.error("media_before_start", f"{type(msg).__name__.lower()} before start")
        elif msg.stream_sid != session.stream_sid:
            self.error("bad_stream_sid", f"streamSid {msg.stream_sid!r} is not this call's")
        elif isinstance(msg, Media):
            if self.guard.floods(len(msg.payload)):
                if lane:
                    return False
                self.refuse("flood", f"audio {self.guard.ahead_ms():.0f} ms ahead of the"
                                     " wall clock since start")
                return True
            session.on_media(msg)
        elif isinstance(msg, Dtmf):
            session.on_dtmf(msg)
        else:
            session.on_mark(msg)
        return True

    async def on_text(self, data: str) -> None:
        try:
            msg = parse_inbound(data, max_bytes=self.limits.max_message_bytes)
        except ProtocolError as exc:
            self.error(exc.reason, exc.message)
            return
        if isinstance(msg, Media | Dtmf | Mark):
            self.on_call_frame(msg)
        elif isinstance(msg, Start):
            await self.on_start(msg)
            if self.session is not None:
                self.guard.started()
        elif isinstance(msg, Stop):
            session = self.session
            if session is None or msg.stream_sid != session.stream_sid:
                self.error("bad_stream_sid", "stop for a stream that is not this call's")
                return
            await session.end("stop")
            await self.ws.close()
        elif isinstance(msg, Connected):
            pass

    async def on_start(self, msg: Start) -> None:
        if self.session is not None:
            self.error("bad_value", "a second start on one stream")
            return
        if msg.encoding != "audio/x-mulaw" or msg.sample_rate != 8000 or msg.channels != 1:
            self.error("bad_value", f"unsupported media format {msg.encoding}/{msg.sample_rate}/"
                                    f"{msg.channels}; expected audio/x-mulaw 8000 1")
        try:
            claims = await self.services.stream_tokens.accept_start(msg.custom_parameters,
                                                                    msg.call_sid)
        except StartRejected as exc:
            await self.reject(exc, msg)
            return
        if self.services.draining:
            # Upgraded before the drain began, started after it: no new call starts now.
            # No record: Twilio goes on to <Connect action>, which says we are busy.
            self.services.counters["refused.draining"] += 1
            self.services.metrics.call_refused("media", "draining")
            log.warning("call_refused", door="start", reason="draining",
                        call_sid=msg.call_sid[:64])
            await self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"draining")
            return
        self.log = log.bind(call_sid=msg.call_sid, stream_sid=msg.stream_sid)
        self.session = CallSession(self.services, msg, claims, ws=self.ws, log=self.log)
        self.services.calls[msg.stream_sid] = self.session
        self.slot.opened()  # counted in the live set from here
        self.services.counters["calls_started"] += 1
        await self.session.begin()

    async def reject(self, exc: StartRejected, msg: Start) -> None:
        """A start `/voice` did not vouch for: no call, no record, no prompt; the socket
        closes (1008, policy violation)."""
        self.services.counters[f"start_rejected.{exc.reason}"] += 1
        self.services.metrics.start_rejected(exc.reason)
        self.log.warning("start_rejected", reason=exc.reason, detail=exc.message,
                         call_sid=msg.call_sid[:64], stream_sid=msg.stream_sid[:64])
        await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"start rejected")
    # ------------------------------------------------------------------ limits

    def refuse(self, reason: ProtocolReason, message: str) -> None:
        """The peer broke a limit: count it and close the socket (1008)."""
        self.error(reason, message)
        self.shut(reason, WSCloseCode.POLICY_VIOLATION)

    def shut(self, reason: str, code: WSCloseCode) -> None:
        """Close the socket with `code`; the read loop stops and the call, if any, ends
        as dropped with `reason`.

        The close runs in a task of its own so that nothing waits on it: aiohttp's
        close waits for the peer's answer (up to 10 s), which a hostile peer need not
        give. It starts before the call ends, so the peer sees this code rather than
        the plain close of a call hanging up.
        """
        if self._closing is None:
            self.end_reason = reason
            self._closing = asyncio.create_task(
                self.ws.close(code=code, message=reason.encode()), name="media-close")

    @property
    def closing(self) -> bool:
        """A limit closed this connection: read no more of it."""
        return self._closing is not None

    def watch(self) -> None:
        """Start the watchdog of the start and idle timeouts.

        A timer, not a task: one wake-up per deadline and nothing per frame (the handler
        only notes the time). A cancelled task would keep its CancelledError, whose
        traceback holds this connection and with it the whole call, as a reference cycle
        only a full garbage collection frees; a cancelled timer holds nothing."""
        self._watchdog = asyncio.get_running_loop().call_later(
            self.guard.until_deadline(), self._check)

    def _check(self) -> None:
        expiry = self.guard.expired()
        if expiry is None:  # frames came in since: sleep until the new deadline
            self.watch()
        elif expiry == "no_start":
            self._watchdog = None
            self.refuse("no_start", f"no start within {self.limits.start_timeout_ms} ms")
        else:
            self._watchdog = None
            self.services.counters["media_idle"] += 1
            self.log.warning("media_idle", after_ms=self.limits.idle_timeout_ms)
            self.shut("idle", WSCloseCode.GOING_AWAY)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.session is not None:
            # A stream that ends without `stop` is a dropped call; end() is idempotent.
            try:
                await self.session.end(self.end_reason)
            except Exception:
                self.log.exception("call_end_failed")
            finally:
                # Whatever the end did, this call is no longer live.
                self.services.calls.pop(self.session.stream_sid, None)
        self.slot.opened()  # a stream that never started gives its place back
        closing, self._closing = self._closing, None
        if closing is not None:
            await asyncio.wait({closing})
            if not closing.cancelled() and closing.exception() is not None:
                self.log.error("media_close_failed", exc_info=closing.exception())


async def media(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if services.settings.twilio_auth_token:
        url = twiml.signed_url(services, request, websocket=True)
        if not twiml.signature_ok(services, url, {}, request.headers.get("X-Twilio-Signature")):
            services.counters["signature_rejected"] += 1
            log.warning("signature_rejected", path=request.path, url=url)
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature\n")
    admission = request.app[ADMISSION]
    refused = admission.refuse("media")
    if refused is not None:
        # Before the upgrade: nothing is spent on the call, and Twilio ends the stream
        # and goes on to <Connect action>, which tells the caller we are busy.
        raise web.HTTPServiceUnavailable(text=f"not taking calls: {refused}\n")
    slot = admission.open_stream()
    limits = MediaLimits.from_settings(services.settings)
    # aiohttp refuses a message at its header, before buffering it, when its length is
    # not below max_msg_size: so limit + 1 admits exactly `max_message_bytes`.
    ws = MediaSocket(max_msg_size=limits.max_message_bytes + 1, autoping=True)
    try:
        await ws.prepare(request)
    except BaseException:
        slot.opened()
        raise
    conn = MediaConnection(services, ws, limits, slot)
    ws.fast_lane(conn.on_text_now)
    conn.watch()
    try:
        async for msg in ws:
            conn.guard.received()
            if msg.type == WSMsgType.TEXT:
                conn.busy = True
                try:
                    await conn.on_text(msg.data)
                finally:
                    conn.busy = False
            elif msg.type == WSMsgType.BINARY:
                conn.error("binary_frame", f"{len(msg.data)}-byte binary frame")
            elif msg.type == WSMsgType.ERROR:
                # aiohttp has closed the socket already, with the code the error carries.
                error = msg.data
                if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
                    conn.error("oversized", f"a message over {limits.max_message_bytes} bytes"
                                            " (closed: 1009)")
                    conn.end_reason = "oversized"
                else:
                    conn.error("bad_value", f"websocket error: {error}")
                break
            if conn.closing:
                break  # frames already buffered would be read before the close could run
    except Exception:
        # The boundary of one call: log it with the call's ids, end this call only.
        conn.log.exception("media_handler_failed")
        services.counters["handler_failures"] += 1
    finally:
        ws.fast_lane(None)  # the lane holds the connection, which holds the socket
        await conn.close()
    return ws
