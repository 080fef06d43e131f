"""Twilio → us: the frames of a Media Stream Twilio sends, as typed messages.

Both sides of this direction live here, because the server and the simulated caller
(`ivr.sim`) must agree with Twilio, not just with each other:

    parse_inbound(frame) -> InboundMessage        the server reading what Twilio sent
    connected_message(), start_message(), ...     the simulated caller writing as Twilio

Shapes follow Twilio's documentation exactly: numeric-looking fields (`sequenceNumber`,
`chunk`, `timestamp`) travel as decimal strings, `mediaFormat.sampleRate` / `channels` as
numbers, and `start` repeats `streamSid` inside its body. The parser accepts a JSON
number where Twilio sends a decimal string (and vice versa for the mediaFormat numbers),
ignores keys it does not know (Twilio adds fields over time), and rejects everything
else with a `ProtocolError` whose `reason` says what was wrong (see `ivr.telephony.wire`).

Pure: no I/O, no logging, no clock.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from ivr.errors import InvalidValue
from ivr.telephony import wire
from ivr.telephony.wire import DEFAULT_MAX_BYTES, MAX_UINT_DIGITS, fail

__all__ = [
    "DTMF_DIGITS",
    "Connected",
    "Dtmf",
    "InboundMessage",
    "Mark",
    "Media",
    "Start",
    "Stop",
    "connected_message",
    "dtmf_message",
    "inbound_mark_message",
    "inbound_media_message",
    "media_fields",
    "parse_inbound",
    "start_message",
    "stop_message",
]

DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str]


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int
    """Milliseconds since the stream started: the caller's clock (frames can be lost)."""
    payload: bytes
    """Decoded 8 kHz µ-law, never empty."""


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """A mark echoed back: the audio sent before it has played, or was cleared."""

    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


InboundMessage: TypeAlias = Connected | Start | Media | Dtmf | Mark | Stop


# --------------------------------------------------------------------------- parsing


def _media_pattern(sid_first: bool) -> re.Pattern[str]:
    """A canonical media frame, as Twilio writes it: these keys, in this order (the
    stream SID before or after `media`), any JSON whitespace, no escapes."""
    sep = r"\s*,\s*"
    def key(name: str) -> str:
        return rf'"{name}"\s*:\s*'
    text = r'"([^"\\\x00-\x1f]*)"'
    number = rf'"(\d{{1,{MAX_UINT_DIGITS - 1}}})"'
    sid = key("streamSid") + r'"([^"\\\x00-\x1f]+)"'
    media = (key("media") + r"\{\s*" + key("track") + text + sep + key("chunk") + number
             + sep + key("timestamp") + number + sep + key("payload")
             + r'"([A-Za-z0-9+/]*={0,2})"\s*\}')
    head = r'\s*\{\s*"event"\s*:\s*"media"' + sep + key("sequenceNumber") + number + sep
    body = sid + sep + media if sid_first else media + sep + sid
    return re.compile(head + body + r"\s*\}\s*")


_SID_FIRST: Final = _media_pattern(True).fullmatch
_SID_LAST: Final = _media_pattern(False).fullmatch
_MEDIA_HEAD: Final = '{"event":"media"'


def _media_groups(text: str, max_bytes: int) -> tuple[str, str, str, str, str, str] | None:
    """(sequence, sid, track, chunk, timestamp, payload) of a canonical media frame."""
    if len(text) > max_bytes or not text.isascii():
        return None
    m = _SID_FIRST(text)
    if m is not None:
        return m.groups()  # type: ignore[return-value]
    m = _SID_LAST(text)
    if m is None:
        return None
    seq, track, chunk, timestamp, payload, sid = m.groups()
    return seq, sid, track, chunk, timestamp, payload


def _audio(payload: str) -> bytes | None:
    """A payload the regular expression matched, decoded; None if it is not strict
    base64 or decodes to nothing (the precise parser then says why)."""
    try:
        audio = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:
        return None
    return audio or None


def media_fields(text: str, max_bytes: int) -> tuple[str, int, bytes] | None:
    """The hot path's own reading (50 frames a second per call): (streamSid, timestamp,
    decoded payload) of a canonical media frame, the same frame `parse_inbound` would
    read as the `Media` with these fields, without building it. None for anything
    else, which `parse_inbound` then accepts or refuses with its exact reason."""
    if not text.startswith(_MEDIA_HEAD):
        return None
    groups = _media_groups(text, max_bytes)
    if groups is None:
        return None
    audio = _audio(groups[5])
    return None if audio is None else (groups[1], int(groups[4]), audio)


def _fast_media(text: str, max_bytes: int) -> Media | None:
    """A canonical media frame read with one regular expression, no JSON decoding.
    Anything else (another key order, an escape, a bad payload, too big) is None, for
    the precise parser to accept or refuse with its exact reason."""
    groups = _media_groups(text, max_bytes)
    if groups is None:
        return None
    seq, sid, track, chunk, timestamp, payload = groups
    audio = _audio(payload)
    if audio is None:
        return None
    return Media(int(seq), sid, track, int(chunk), int(timestamp), audio)


def parse_inbound(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> InboundMessage:
    """Parse one frame Twilio sent us; raise `ProtocolError` if it is not a valid one."""
    if type(text) is str and text.startswith(_MEDIA_HEAD):
        fast = _fast_media(text, max_bytes)
        if fast is not None:
            return fast
    data = wire.load(text, max_bytes)
    event = data.get("event")
    if event == "media":
        # Media the regular expression did not take (another spelling of JSON): read
        # with no helper calls when canonical in shape; anything unusual falls through
        # to the precise parser, which either accepts it too or says exactly what is wrong.
        try:
            media = data["media"]
            seq = data["sequenceNumber"]
            sid = data["streamSid"]
            track = media["track"]
            chunk = media["chunk"]
            timestamp = media["timestamp"]
            payload = media["payload"]
        except (KeyError, TypeError):
            return _parse_media(data)
        if (
            type(seq) is str
            and type(chunk) is str
            and type(timestamp) is str
            and type(sid) is str
            and type(track) is str
            and type(payload) is str
            and sid
            and 0 < len(seq) < MAX_UINT_DIGITS
            and 0 < len(chunk) < MAX_UINT_DIGITS
            and 0 < len(timestamp) < MAX_UINT_DIGITS
            and seq.isascii()
            and seq.isdigit()
            and chunk.isascii()
            and chunk.isdigit()
            and timestamp.isascii()
            and timestamp.isdigit()
        ):
            try:
                audio = binascii.a2b_base64(payload, strict_mode=True)
            except ValueError:
                return _parse_media(data)
            if audio:
                return Media(int(seq), sid, track, int(chunk), int(timestamp), audio)
        return _parse_media(data)
    if event is None:
        if "event" in data:
            fail("bad_type", "event: expected string, got null")
        fail("missing_field", "event is missing")
    if type(event) is not str:
        fail("bad_type", f"event: expected string, got {wire.kind(event)}")
    parser = _PARSERS.get(event)
    if parser is None:
        fail("unknown_event", f"unknown inbound event {event[:40]!r}")
    return parser(data)


def _parse_connected(data: dict[str, Any]) -> Connected:
    return Connected(wire.string(data, "protocol", ""), wire.string(data, "version", ""))


def _parse_start(data: dict[str, Any]) -> Start:
    seq = wire.uint(data, "sequenceNumber", "")
    sid = wire.sid(data, "streamSid", "")
    start = wire.obj(data, "start", "")
    # Twilio repeats streamSid inside `start`; the top-level one is authoritative, so a
    # missing copy is tolerated but a contradicting one means the frame is corrupt.
    if "streamSid" in start and wire.sid(start, "streamSid", "start.") != sid:
        fail("bad_stream_sid", "start.streamSid differs from streamSid")
    tracks_value = wire.field(start, "tracks", "start.")
    if type(tracks_value) is not list:
        fail("bad_type", f"start.tracks: expected array, got {wire.kind(tracks_value)}")
    if not tracks_value:
        fail("bad_value", "start.tracks is empty")
    for i, track in enumerate(tracks_value):
        if type(track) is not str:
            fail("bad_type", f"start.tracks[{i}]: expected string, got {wire.kind(track)}")
    fmt = wire.obj(start, "mediaFormat", "start.")
    encoding = wire.string(fmt, "encoding", "start.mediaFormat.")
    sample_rate = wire.positive(fmt, "sampleRate", "start.mediaFormat.")
    channels = wire.positive(fmt, "channels", "start.mediaFormat.")
    # Twilio always sends customParameters, but an absent object and an empty one mean
    # the same to us: no <Parameter> was given.
    params: dict[str, str] = {}
    if "customParameters" in start:
        raw = wire.obj(start, "customParameters", "start.")
        for key, value in raw.items():
            if type(value) is not str:
                fail(
                    "bad_type",
                    f"start.customParameters.{key[:40]}: expected string,"
                    f" got {wire.kind(value)}",
                )
            params[key] = value
    return Start(
        sequence_number=seq,
        stream_sid=sid,
        account_sid=wire.string(start, "accountSid", "start."),
        call_sid=wire.string(start, "callSid", "start."),
        tracks=tuple(tracks_value),
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        custom_parameters=params,
    )


def _parse_media(data: dict[str, Any]) -> Media:
    seq = wire.uint(data, "sequenceNumber", "")
    sid = wire.sid(data, "streamSid", "")
    media = wire.obj(data, "media", "")
    return Media(
        sequence_number=seq,
        stream_sid=sid,
        track=wire.string(media, "track", "media."),
        chunk=wire.uint(media, "chunk", "media."),
        timestamp=wire.uint(media, "timestamp", "media."),
        payload=wire.payload(media, "media."),
    )


def _parse_dtmf(data: dict[str, Any]) -> Dtmf:
    seq = wire.uint(data, "sequenceNumber", "")
    sid = wire.sid(data, "streamSid", "")
    dtmf = wire.obj(data, "dtmf", "")
    track = wire.string(dtmf, "track", "dtmf.")
    digit = wire.string(dtmf, "digit", "dtmf.")
    if digit not in DTMF_DIGITS:
        fail("bad_digit", f"dtmf.digit {digit[:10]!r} is not one of 0-9 * # A-D")
    return Dtmf(seq, sid, track, digit)


def _parse_mark(data: dict[str, Any]) -> Mark:
    seq = wire.uint(data, "sequenceNumber", "")
    sid = wire.sid(data, "streamSid", "")
    mark = wire.obj(data, "mark", "")
    return Mark(seq, sid, wire.string(mark, "name", "mark."))


def _parse_stop(data: dict[str, Any]) -> Stop:
    seq = wire.uint(data, "sequenceNumber", "")
    sid = wire.sid(data, "streamSid", "")
    stop = wire.obj(data, "stop", "")
    return Stop(
        seq, sid, wire.string(stop, "accountSid", "stop."), wire.string(stop, "callSid", "stop.")
    )


_PARSERS: Final[dict[str, Callable[[dict[str, Any]], InboundMessage]]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}


# --------------------------------------------------------------------------- building
# What Twilio sends, for the simulated caller and the load generator.


def connected_message() -> str:
    return wire.dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(
    sequence_number: int,
    stream_sid: str,
    account_sid: str,
    call_sid: str,
    custom_parameters: Mapping[str, str],
    tracks: Iterable[str] = ("inbound",),
    *,
    encoding: str = "audio/x-mulaw",
    sample_rate: int = 8000,
    channels: int = 1,
) -> str:
    track_list = list(tracks)
    if not track_list:
        raise InvalidValue("tracks must not be empty")
    return wire.dump(
        {
            "event": "start",
            "sequenceNumber": wire.num("sequence_number", sequence_number),
            "streamSid": wire.check_sid(stream_sid),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": track_list,
                "mediaFormat": {
                    "encoding": encoding,
                    "sampleRate": wire.check_uint("sample_rate", sample_rate, minimum=1),
                    "channels": wire.check_uint("channels", channels, minimum=1),
                },
                "customParameters": dict(custom_parameters),
            },
        }
    )


def inbound_media_message(
    sequence_number: int,
    stream_sid: str,
    chunk: int,
    timestamp_ms: int,
    payload: bytes,
    track: str = "inbound",
) -> str:
    return wire.dump(
        {
            "event": "media",
            "sequenceNumber": wire.num("sequence_number", sequence_number),
            "streamSid": wire.check_sid(stream_sid),
            "media": {
                "track": track,
                "chunk": wire.num("chunk", chunk),
                "timestamp": wire.num("timestamp_ms", timestamp_ms),
                "payload": wire.b64(payload),
            },
        }
    )


def dtmf_message(sequence_number: int, stream_sid: str, digit: str) -> str:
    if digit not in DTMF_DIGITS:
        raise InvalidValue(f"digit must be one of 0-9 * # A-D, got {digit!r}")
    return wire.dump(
        {
            "event": "dtmf",
            "sequenceNumber": wire.num("sequence_number", sequence_number),
            "streamSid": wire.check_sid(stream_sid),
            # Twilio names the track differently here than in media frames.
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def inbound_mark_message(sequence_number: int, stream_sid: str, name: str) -> str:
    return wire.dump(
        {
            "event": "mark",
            "sequenceNumber": wire.num("sequence_number", sequence_number),
            "streamSid": wire.check_sid(stream_sid),
            "mark": {"name": name},
        }
    )


def stop_message(sequence_number: int, stream_sid: str, account_sid: str, call_sid: str) -> str:
    return wire.dump(
        {
            "event": "stop",
            "sequenceNumber": wire.num("sequence_number", sequence_number),
            "streamSid": wire.check_sid(stream_sid),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )
