"""us → Twilio: the frames we send on a Media Stream (media, mark, clear).

Both sides of this direction live here, because the server and the simulated caller
(`ivr.sim`) must agree with Twilio, not just with each other:

    media_message(), mark_message(), clear_message()   the server writing to Twilio
    parse_outbound(frame) -> OutboundMessage           the simulated caller reading as Twilio

`TwilioOutbound` binds the builders to one stream and a send function: it is the
implementation of the player's outbound port (`ivr.audio.player.Outbound`), so the
player sends audio, marks and clears without knowing Twilio's JSON or the stream SID.

The builders and the parser are pure; `TwilioOutbound` only calls the send it is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import TypeAlias

from ivr.telephony import wire
from ivr.telephony.wire import DEFAULT_MAX_BYTES

__all__ = [
    "OutClear",
    "OutMark",
    "OutMedia",
    "OutboundMessage",
    "Send",
    "TwilioOutbound",
    "clear_message",
    "mark_message",
    "media_message",
    "parse_outbound",
]

Send: TypeAlias = Callable[[str], Awaitable[None]]
"""Sends one text frame on the call's WebSocket."""


@dataclass(frozen=True, slots=True)
class OutMedia:
    stream_sid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutMark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutClear:
    stream_sid: str


OutboundMessage: TypeAlias = OutMedia | OutMark | OutClear


def media_message(stream_sid: str, payload: bytes) -> str:
    """Outbound audio: one whole chunk of raw 8 kHz µ-law, base64 in a single string."""
    # Built by hand: this runs 50 times a second per call and json.dumps of the
    # dict costs several times more than quoting the one field that needs it.
    sid = encode_basestring_ascii(wire.check_sid(stream_sid))
    return f'{{"event":"media","streamSid":{sid},"media":{{"payload":"{wire.b64(payload)}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    return wire.dump(
        {"event": "mark", "streamSid": wire.check_sid(stream_sid), "mark": {"name": name}}
    )


def clear_message(stream_sid: str) -> str:
    return wire.dump({"event": "clear", "streamSid": wire.check_sid(stream_sid)})


def parse_outbound(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> OutboundMessage:
    """Parse one frame we sent Twilio (the simulated caller's side of the socket)."""
    data = wire.load(text, max_bytes)
    event = wire.string(data, "event", "")
    if event == "media":
        media = wire.obj(data, "media", "")
        return OutMedia(wire.sid(data, "streamSid", ""), wire.payload(media, "media."))
    if event == "mark":
        mark = wire.obj(data, "mark", "")
        return OutMark(wire.sid(data, "streamSid", ""), wire.string(mark, "name", "mark."))
    if event == "clear":
        return OutClear(wire.sid(data, "streamSid", ""))
    wire.fail("unknown_event", f"unknown outbound event {event[:40]!r}")


class TwilioOutbound:
    """One Media Stream's outbound side: audio, marks and clears as Twilio frames."""

    __slots__ = ("_send", "_stream_sid")

    def __init__(self, send: Send, stream_sid: str) -> None:
        self._send = send
        self._stream_sid = stream_sid

    async def media(self, ulaw: bytes) -> None:
        await self._send(media_message(self._stream_sid, ulaw))

    async def mark(self, name: str) -> None:
        await self._send(mark_message(self._stream_sid, name))

    async def clear(self) -> None:
        await self._send(clear_message(self._stream_sid))
