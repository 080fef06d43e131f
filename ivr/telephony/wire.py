"""The JSON framing both directions of a Twilio Media Stream share.

Reading: `load` turns one WebSocket text frame into a JSON object, within a size bound
and strictly (UTF-8 only, no NaN); the field readers (`string`, `uint`, `obj`, ...)
take one field each. `where` is the JSON path prefix ("" or "media.") so every
`ProtocolError` names the exact field, which is what makes a counted error debuggable
after the fact. No other exception escapes a reader.

Writing: compact JSON, base64 and the argument checks the builders share. A builder
raises `InvalidValue` for an argument a parser would reject: that is a bug in our code,
not a bad frame from the network.

Pure: no I/O, no logging, no clock.
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, NoReturn

from ivr.errors import InvalidValue, ProtocolError, ProtocolReason

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_UINT",
    "MAX_UINT_DIGITS",
    "b64",
    "check_sid",
    "check_uint",
    "dump",
    "fail",
    "field",
    "kind",
    "load",
    "num",
    "obj",
    "payload",
    "positive",
    "sid",
    "string",
    "uint",
]

# A 20 ms media frame is ~400 bytes; 64 KiB leaves room for a start frame with many
# custom parameters while bounding the work a hostile peer can make us do per frame.
DEFAULT_MAX_BYTES: Final = 64 * 1024

# Counters and clocks are stored as SQLite INTEGERs (signed 64-bit); anything larger
# is garbage, and bounding the digit count also keeps int() far below its DoS limit.
MAX_UINT: Final = 2**63 - 1
MAX_UINT_DIGITS: Final = len(str(MAX_UINT))


# --------------------------------------------------------------------------- reading


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity by default; Twilio never sends them and they are not JSON.
    raise InvalidValue(f"non-standard JSON constant {name}")


# One decoder built once: json.loads with any keyword argument builds a new one per call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def load(text: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One frame as a JSON object; `ProtocolError` if it is too big, not JSON, or not an object."""
    if isinstance(text, str):
        size = len(text)
        # Counting UTF-8 bytes means encoding, so only do it when characters alone
        # cannot settle the question (isascii() is O(1) on CPython).
        if size > max_bytes or (
            size * 4 > max_bytes
            and not text.isascii()
            and len(text.encode("utf-8", "surrogatepass")) > max_bytes
        ):
            fail("oversized", f"frame is larger than {max_bytes} bytes")
    else:
        if len(text) > max_bytes:
            fail("oversized", f"frame is larger than {max_bytes} bytes")
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
        fail("not_object", f"frame is a JSON {kind(data)}, not an object")
    return data


def fail(reason: ProtocolReason, message: str) -> NoReturn:
    raise ProtocolError(reason, message)


def kind(value: object) -> str:
    """The JSON type name of a decoded value, for error messages."""
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


def field(data: dict[str, Any], key: str, where: str) -> Any:
    try:
        return data[key]
    except KeyError:
        fail("missing_field", f"{where}{key} is missing")


def obj(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = field(data, key, where)
    if type(value) is not dict:
        fail("bad_type", f"{where}{key}: expected object, got {kind(value)}")
    return value


def string(data: dict[str, Any], key: str, where: str) -> str:
    value = field(data, key, where)
    if type(value) is not str:
        fail("bad_type", f"{where}{key}: expected string, got {kind(value)}")
    return value


def sid(data: dict[str, Any], key: str, where: str) -> str:
    """A non-empty SID string."""
    value = string(data, key, where)
    if not value:
        fail("bad_stream_sid", f"{where}{key} is empty")
    return value


def uint(data: dict[str, Any], key: str, where: str) -> int:
    """A non-negative integer sent as a decimal string (Twilio's way) or a JSON number."""
    value = field(data, key, where)
    if type(value) is str:
        # isdigit() alone admits '²' and Arabic-Indic digits, and int() would also take
        # ' 7', '+7' and '1_000': none of which Twilio sends.
        if 0 < len(value) <= MAX_UINT_DIGITS and value.isascii() and value.isdigit():
            number = int(value)
            if number <= MAX_UINT:
                return number
        fail("bad_number", f"{where}{key}: {value[:24]!r} is not a non-negative integer")
    if type(value) is int:  # `type is`, not isinstance: True is not a sequence number
        if 0 <= value <= MAX_UINT:
            return value
        fail("bad_number", f"{where}{key}: {value} is out of range")
    fail("bad_type", f"{where}{key}: expected integer string, got {kind(value)}")


def positive(data: dict[str, Any], key: str, where: str) -> int:
    number = uint(data, key, where)
    if number == 0:
        fail("bad_value", f"{where}{key} is zero")
    return number


def payload(data: dict[str, Any], where: str) -> bytes:
    """The base64 `payload` field, decoded: never empty."""
    value = string(data, "payload", where)
    try:
        # What base64.b64decode(validate=True) does on 3.11+, minus its wrapper (~40% of
        # the decode cost on a 20 ms frame): any non-alphabet character, bad padding or
        # data after padding is an error rather than silently skipped.
        audio = binascii.a2b_base64(value, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters in a str
        raise ProtocolError("bad_base64", f"{where}payload is not valid base64: {exc}") from exc
    if not audio:
        fail("empty_payload", f"{where}payload is empty")
    return audio


# --------------------------------------------------------------------------- writing
# Compact separators: that is how Twilio frames look on the wire, and it is less to send.


def dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def b64(audio: bytes) -> str:
    if not audio:
        raise InvalidValue("payload must not be empty")
    return binascii.b2a_base64(audio, newline=False).decode("ascii")


def check_sid(stream_sid: str) -> str:
    if not stream_sid:
        raise InvalidValue("stream_sid must not be empty")
    return stream_sid


def check_uint(name: str, value: int, *, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= MAX_UINT:
        raise InvalidValue(f"{name} must be an int in [{minimum}, 2**63), got {value!r}")
    return value


def num(name: str, value: int) -> str:
    # Twilio sends counters as decimal strings.
    return str(check_uint(name, value))
