"""`GET /media`: one Twilio Media Stream per WebSocket.

The handler is a plain `async for msg in ws` loop. It never awaits anything slow per
frame: if we read too slowly Twilio drops inbound audio. A bad frame is logged (the
first few per call, then sampled), counted, and skipped; the call goes on. Anything
unexpected ends this call cleanly with its record written, and never another call.
"""

from __future__ import annotations

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from ivr.errors import ProtocolError, ProtocolReason
from ivr.server.services import SERVICES, Services
from ivr.session.call import CallSession
from ivr.store.db import DROPPED
from ivr.telephony import twiml
from ivr.telephony.inbound import Connected, Dtmf, Mark, Media, Start, Stop, parse_inbound
from ivr.telephony.stream_token import StartRejected
from ivr.telephony.wire import DEFAULT_MAX_BYTES

log = structlog.get_logger("ivr.media")

# Twilio's frames are < 1 KiB; anything near the parser's bound is hostile.
MAX_FRAME = DEFAULT_MAX_BYTES
_LOGGED_ERRORS = 10  # per connection, then one in 100


class MediaConnection:
    """Protocol state of one WebSocket: before start, in a call, stopped."""

    def __init__(self, services: Services, ws: web.WebSocketResponse) -> None:
        self.services = services
        self.ws = ws
        self.session: CallSession | None = None
        self.errors = 0
        self.log = log

    def error(self, reason: ProtocolReason, message: str) -> None:
        self.errors += 1
        self.services.counters[f"protocol_error.{reason}"] += 1
        self.services.metrics.protocol_error(reason)
        if self.session is not None:
            self.session.stats["protocol_errors"] += 1
        if self.errors <= _LOGGED_ERRORS or self.errors % 100 == 0:
            self.log.warning("protocol_error", reason=reason, detail=message[:200],
                             count=self.errors)

    async def on_text(self, data: str) -> None:
        try:
            msg = parse_inbound(data, max_bytes=MAX_FRAME)
        except ProtocolError as exc:
            self.error(exc.reason, exc.message)
            return
        session = self.session
        if isinstance(msg, Media | Dtmf | Mark):
            if session is None:
                self.error("media_before_start", f"{type(msg).__name__.lower()} before start")
            elif msg.stream_sid != session.stream_sid:
                self.error("bad_stream_sid", f"streamSid {msg.stream_sid!r} is not this call's")
            elif isinstance(msg, Media):
                session.on_media(msg)
            elif isinstance(msg, Dtmf):
                session.on_dtmf(msg)
            else:
                session.on_mark(msg)
        elif isinstance(msg, Start):
            await self.on_start(msg)
        elif isinstance(msg, Stop):
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
            claims = self.services.stream_tokens.accept(msg.custom_parameters, msg.call_sid)
        except StartRejected as exc:
            await self.reject(exc, msg)
            return
        self.log = log.bind(call_sid=msg.call_sid, stream_sid=msg.stream_sid)
        self.session = CallSession(self.services, msg, claims, ws=self.ws, log=self.log)
        self.services.calls[msg.stream_sid] = self.session
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

    async def close(self) -> None:
        if self.session is not None:
            # A stream that ends without `stop` is a dropped call; end() is idempotent.
            await self.session.end(DROPPED)
            self.services.calls.pop(self.session.stream_sid, None)


async def media(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if services.settings.twilio_auth_token:
        url = twiml.signed_url(services, request, websocket=True)
        if not twiml.signature_ok(services, url, {}, request.headers.get("X-Twilio-Signature")):
            services.counters["signature_rejected"] += 1
            log.warning("signature_rejected", path=request.path, url=url)
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature\n")
    # aiohttp's own limit sits above ours so an oversized frame is a counted protocol
    # error on a call that goes on, not a closed socket.
    ws = web.WebSocketResponse(max_msg_size=4 * MAX_FRAME, autoping=True)
    await ws.prepare(request)
    conn = MediaConnection(services, ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await conn.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.error("binary_frame", f"{len(msg.data)}-byte binary frame")
            elif msg.type == WSMsgType.ERROR:
                conn.error("oversized" if "size" in str(ws.exception()) else "bad_value",
                           f"websocket error: {ws.exception()}")
                break
    except Exception:
        # The boundary of one call: log it with the call's ids, end this call only.
        conn.log.exception("media_handler_failed")
        services.counters["handler_failures"] += 1
    finally:
        await conn.close()
    return ws
