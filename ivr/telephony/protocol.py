"""Twilio Media Streams (bidirectional) wire protocol: JSON text frames ⇄ typed messages.

Pure: no I/O, no logging, no clock. Both directions are implemented twice over, because
the server and the simulated caller (`ivr.sim.caller`) must agree with Twilio, not just with
each other:

    Twilio → us   parse_inbound(frame) -> Inbound       built by connected_message(),
                                                         start_message(), ... (caller side)
    us → Twilio   media_message(), mark_message(),       parsed by parse_outbound(frame)
                  clear_message()                        -> Outbound (caller side)

Shapes follow Twilio's documentation exactly: numeric-looking fields (`sequenceNumber`,
`chunk`, `timestamp`) travel as decimal strings, `mediaFormat.sampleRate` / `channels` as
numbers, and `start` repeats `streamSid` inside its body. Parsers accept a JSON number
where Twilio sends a decimal string (and vice versa for the mediaFormat numbers), ignore
keys they do not know (Twilio adds fields over time), and reject everything else with a
`ProtocolError` whose `reason` says what was wrong. No other exception escapes a parser.

Builders raise `ValueError` for arguments a parser would reject: that is a bug in our
code, not a bad frame from the network.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Final, NoReturn, TypeAlias

from ivr.errors import InvalidValue, ProtocolError, ProtocolReason

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DTMF_DIGITS",
    "Connected",
    "Dtmf",
    "Inbound",
    "Mark",
    "Media",
    "OutClear",
    "OutMark",
    "OutMedia",
    "Outbound",
    "Start",
    "Stop",
    "clear_message",
    "connected_message",
    "dtmf_message",
    "inbound_mark_message",
    "inbound_media_message",
    "mark_message",
    "media_message",
    "parse_inbound",
    "parse_outbound",
    "start_message",
    "stop_message",
]

# A 20 ms media frame is ~400 bytes; 64 KiB leaves room for a start frame with many
# custom parameters while bounding the work a hostile peer can make us do per frame.
DEFAULT_MAX_BYTES: Final = 64 * 1024
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")

# Counters and clocks are stored as SQLite INTEGERs (signed 64-bit); anything larger
# is garbage, and bounding the digit count also keeps int() far below its DoS limit.
_MAX_UINT: Final = 2**63 - 1
_MAX_UINT_DIGITS: Final = len(str(_MAX_UINT))


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
    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


Inbound: TypeAlias = Connected | Start | Media | Dtmf | Mark | Stop


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


Outbound: TypeAlias = OutMedia | OutMark | OutClear


# --------------------------------------------------------------------------- parsing


def parse_inbound(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Inbound:
    """Parse one frame Twilio sent us; raise `ProtocolError` if it is not a valid one."""
    data = _load(text, max_bytes)
    event = data.get("event")
    if event == "media":
        # The hot path (50 frames/s per call): canonical Twilio frames are decoded here
        # with no helper calls; anything unusual falls through to the precise parser,
        # which either accepts it too or says exactly what is wrong.
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
            and 0 < len(seq) < _MAX_UINT_DIGITS
            and 0 < len(chunk) < _MAX_UINT_DIGITS
            and 0 < len(timestamp) < _MAX_UINT_DIGITS
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
            _fail("bad_type", "event: expected string, got null")
        _fail("missing_field", "event is missing")
    if type(event) is not str:
        _fail("bad_type", f"event: expected string, got {_kind(event)}")
    parser = _INBOUND_PARSERS.get(event)
    if parser is None:
        _fail("unknown_event", f"unknown inbound event {event[:40]!r}")
    return parser(data)


def parse_outbound(text: str | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Outbound:
    """Parse one frame we sent Twilio (the simulated caller's side of the socket)."""
    data = _load(text, max_bytes)
    event = _str(data, "event", "")
    if event == "media":
        media = _obj(data, "media", "")
        return OutMedia(_sid(data, "streamSid", ""), _payload(media, "media."))
    if event == "mark":
        mark = _obj(data, "mark", "")
        return OutMark(_sid(data, "streamSid", ""), _str(mark, "name", "mark."))
    if event == "clear":
        return OutClear(_sid(data, "streamSid", ""))
    _fail("unknown_event", f"unknown outbound event {event[:40]!r}")


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity by default; Twilio never sends them and they are not JSON.
    raise InvalidValue(f"non-standard JSON constant {name}")


# One decoder built once: json.loads with any keyword argument builds a new one per call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _load(text: str | bytes, max_bytes: int) -> dict[str, Any]:
    if isinstance(text, str):
        size = len(text)
        # Counting UTF-8 bytes means encoding, so only do it when characters alone
        # cannot settle the question (isascii() is O(1) on CPython).
        if size > max_bytes or (
            size * 4 > max_bytes
            and not text.isascii()
            and len(text.encode("utf-8", "surrogatepass")) > max_bytes
        ):
            _fail("oversized", f"frame is larger than {max_bytes} bytes")
    else:
        if len(text) > max_bytes:
            _fail("oversized", f"frame is larger than {max_bytes} bytes")
        try:
            # Strict UTF-8: json.loads(bytes) would also guess UTF-16/32, which no
            # WebSocket text frame can carry.
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("not_json", f"frame is not UTF-8: {exc.reason}") from exc
    try:
        data = _DECODER.decode(text)
    except RecursionError as exc:
        raise ProtocolError("not_json", "JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, NaN, integers past int()'s digit limit
        raise ProtocolError("not_json", f"frame is not JSON: {exc}") from exc
    if type(data) is not dict:
        _fail("not_object", f"frame is a JSON {_kind(data)}, not an object")
    return data


def _parse_connected(data: dict[str, Any]) -> Connected:
    return Connected(_str(data, "protocol", ""), _str(data, "version", ""))


def _parse_start(data: dict[str, Any]) -> Start:
    seq = _uint(data, "sequenceNumber", "")
    sid = _sid(data, "streamSid", "")
    start = _obj(data, "start", "")
    # Twilio repeats streamSid inside `start`; the top-level one is authoritative, so a
    # missing copy is tolerated but a contradicting one means the frame is corrupt.
    if "streamSid" in start and _sid(start, "streamSid", "start.") != sid:
        _fail("bad_stream_sid", "start.streamSid differs from streamSid")
    tracks_value = _field(start, "tracks", "start.")
    if type(tracks_value) is not list:
        _fail("bad_type", f"start.tracks: expected array, got {_kind(tracks_value)}")
    if not tracks_value:
        _fail("bad_value", "start.tracks is empty")
    for i, track in enumerate(tracks_value):
        if type(track) is not str:
            _fail("bad_type", f"start.tracks[{i}]: expected string, got {_kind(track)}")
    fmt = _obj(start, "mediaFormat", "start.")
    encoding = _str(fmt, "encoding", "start.mediaFormat.")
    sample_rate = _positive(fmt, "sampleRate", "start.mediaFormat.")
    channels = _positive(fmt, "channels", "start.mediaFormat.")
    # Twilio always sends customParameters, but an absent object and an empty one mean
    # the same to us: no <Parameter> was given.
    params: dict[str, str] = {}
    if "customParameters" in start:
        raw = _obj(start, "customParameters", "start.")
        for key, value in raw.items():
            if type(value) is not str:
                _fail(
                    "bad_type",
                    f"start.customParameters.{key[:40]}: expected string, got {_kind(value)}",
                )
            params[key] = value
    return Start(
        sequence_number=seq,
        stream_sid=sid,
        account_sid=_str(start, "accountSid", "start."),
        call_sid=_str(start, "callSid", "start."),
        tracks=tuple(tracks_value),
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        custom_parameters=params,
    )


def _parse_media(data: dict[str, Any]) -> Media:
    seq = _uint(data, "sequenceNumber", "")
    sid = _sid(data, "streamSid", "")
    media = _obj(data, "media", "")
    return Media(
        sequence_number=seq,
        stream_sid=sid,
        track=_str(media, "track", "media."),
        chunk=_uint(media, "chunk", "media."),
        timestamp=_uint(media, "timestamp", "media."),
        payload=_payload(media, "media."),
    )


def _parse_dtmf(data: dict[str, Any]) -> Dtmf:
    seq = _uint(data, "sequenceNumber", "")
    sid = _sid(data, "streamSid", "")
    dtmf = _obj(data, "dtmf", "")
    track = _str(dtmf, "track", "dtmf.")
    digit = _str(dtmf, "digit", "dtmf.")
    if digit not in DTMF_DIGITS:
        _fail("bad_digit", f"dtmf.digit {digit[:10]!r} is not one of 0-9 * # A-D")
    return Dtmf(seq, sid, track, digit)


def _parse_mark(data: dict[str, Any]) -> Mark:
    seq = _uint(data, "sequenceNumber", "")
    sid = _sid(data, "streamSid", "")
    mark = _obj(data, "mark", "")
    return Mark(seq, sid, _str(mark, "name", "mark."))


def _parse_stop(data: dict[str, Any]) -> Stop:
    seq = _uint(data, "sequenceNumber", "")
    sid = _sid(data, "streamSid", "")
    stop = _obj(data, "stop", "")
    return Stop(seq, sid, _str(stop, "accountSid", "stop."), _str(stop, "callSid", "stop."))


_INBOUND_PARSERS: Final[dict[str, Callable[[dict[str, Any]], Inbound]]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": _parse_dtmf,
    "mark": _parse_mark,
    "stop": _parse_stop,
}


# Field helpers. `where` is the JSON path prefix ("" or "media.") so every error names
# the exact field, which is what makes a counted ProtocolError debuggable after the fact.


def _fail(reason: ProtocolReason, message: str) -> NoReturn:
    raise ProtocolError(reason, message)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    if type(value) is int or type(value) is float:
        return "number"
    if type(value) is str:
        return "string"
    if type(value) is list:
        return "array"
    if type(value) is dict:
        return "object"
    return type(value).__name__


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        _fail("missing_field", f"{where}{key} is missing")


def _obj(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = _field(obj, key, where)
    if type(value) is not dict:
        _fail("bad_type", f"{where}{key}: expected object, got {_kind(value)}")
    return value


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = _field(obj, key, where)
    if type(value) is not str:
        _fail("bad_type", f"{where}{key}: expected string, got {_kind(value)}")
    return value


def _sid(obj: dict[str, Any], key: str, where: str) -> str:
    value = _str(obj, key, where)
    if not value:
        _fail("bad_stream_sid", f"{where}{key} is empty")
    return value


def _uint(obj: dict[str, Any], key: str, where: str) -> int:
    """A non-negative integer sent as a decimal string (Twilio's way) or a JSON number."""
    value = _field(obj, key, where)
    if type(value) is str:
        # isdigit() alone admits '²' and Arabic-Indic digits, and int() would also take
        # ' 7', '+7' and '1_000': none of which Twilio sends.
        if 0 < len(value) <= _MAX_UINT_DIGITS and value.isascii() and value.isdigit():
            number = int(value)
            if number <= _MAX_UINT:
                return number
        _fail("bad_number", f"{where}{key}: {value[:24]!r} is not a non-negative integer")
    if type(value) is int:  # `type is`, not isinstance: True is not a sequence number
        if 0 <= value <= _MAX_UINT:
            return value
        _fail("bad_number", f"{where}{key}: {value} is out of range")
    _fail("bad_type", f"{where}{key}: expected integer string, got {_kind(value)}")


def _positive(obj: dict[str, Any], key: str, where: str) -> int:
    number = _uint(obj, key, where)
    if number == 0:
        _fail("bad_value", f"{where}{key} is zero")
    return number


def _payload(obj: dict[str, Any], where: str) -> bytes:
    value = _str(obj, "payload", where)
    try:
        # What base64.b64decode(validate=True) does on 3.11+, minus its wrapper (~40% of
        # the decode cost on a 20 ms frame): any non-alphabet character, bad padding or
        # data after padding is an error rather than silently skipped.
        audio = binascii.a2b_base64(value, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters in a str
        raise ProtocolError("bad_base64", f"{where}payload is not valid base64: {exc}") from exc
    if not audio:
        _fail("empty_payload", f"{where}payload is empty")
    return audio


# --------------------------------------------------------------------------- building
# Compact separators: that is how Twilio frames look on the wire, and it is less to send.


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _b64(payload: bytes) -> str:
    if not payload:
        raise InvalidValue("payload must not be empty")
    return binascii.b2a_base64(payload, newline=False).decode("ascii")


def _check_sid(stream_sid: str) -> str:
    if not stream_sid:
        raise InvalidValue("stream_sid must not be empty")
    return stream_sid


def _check_uint(name: str, value: int, *, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= _MAX_UINT:
        raise InvalidValue(f"{name} must be an int in [{minimum}, 2**63), got {value!r}")
    return value


def _num(name: str, value: int) -> str:
    # Twilio sends counters as decimal strings.
    return str(_check_uint(name, value))


def media_message(stream_sid: str, payload: bytes) -> str:
    """Outbound audio: one whole chunk of raw 8 kHz µ-law, base64 in a single string."""
    # Built by hand: this runs 50 times a second per call and json.dumps of the
    # dict costs several times more than quoting the one field that needs it.
    sid = encode_basestring_ascii(_check_sid(stream_sid))
    return f'{{"event":"media","streamSid":{sid},"media":{{"payload":"{_b64(payload)}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    return _dump({"event": "mark", "streamSid": _check_sid(stream_sid), "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return _dump({"event": "clear", "streamSid": _check_sid(stream_sid)})


def connected_message() -> str:
    return _dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})


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
    return _dump(
        {
            "event": "start",
            "sequenceNumber": _num("sequence_number", sequence_number),
            "streamSid": _check_sid(stream_sid),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": track_list,
                "mediaFormat": {
                    "encoding": encoding,
                    "sampleRate": _check_uint("sample_rate", sample_rate, minimum=1),
                    "channels": _check_uint("channels", channels, minimum=1),
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
    return _dump(
        {
            "event": "media",
            "sequenceNumber": _num("sequence_number", sequence_number),
            "streamSid": _check_sid(stream_sid),
            "media": {
                "track": track,
                "chunk": _num("chunk", chunk),
                "timestamp": _num("timestamp_ms", timestamp_ms),
                "payload": _b64(payload),
            },
        }
    )


def dtmf_message(sequence_number: int, stream_sid: str, digit: str) -> str:
    if digit not in DTMF_DIGITS:
        raise InvalidValue(f"digit must be one of 0-9 * # A-D, got {digit!r}")
    return _dump(
        {
            "event": "dtmf",
            "sequenceNumber": _num("sequence_number", sequence_number),
            "streamSid": _check_sid(stream_sid),
            # Twilio names the track differently here than in media frames.
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def inbound_mark_message(sequence_number: int, stream_sid: str, name: str) -> str:
    return _dump(
        {
            "event": "mark",
            "sequenceNumber": _num("sequence_number", sequence_number),
            "streamSid": _check_sid(stream_sid),
            "mark": {"name": name},
        }
    )


def stop_message(sequence_number: int, stream_sid: str, account_sid: str, call_sid: str) -> str:
    return _dump(
        {
            "event": "stop",
            "sequenceNumber": _num("sequence_number", sequence_number),
            "streamSid": _check_sid(stream_sid),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )
