"""The project's single exception tree.

    IvrError                 anything ivr raises on purpose
    ├── ProtocolError        a Twilio Media Streams frame we cannot accept (`reason` code)
    ├── FlowError            a call-flow file that cannot be loaded (`file:line:col`)
    ├── SpeechError          a recognizer or synthesizer failed
    ├── StoreError           the call store failed
    ├── ConfigError          settings are missing or invalid
    └── InvalidValue         an argument or parsed value out of range (also a ValueError,
                             so pydantic validators and argparse types report it as theirs)

Callers catch the narrow class where they can recover (the media handler counts
`ProtocolError`s and keeps reading) and `IvrError` at process boundaries; anything
else escaping is a bug.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ConfigError",
    "FlowError",
    "InvalidValue",
    "IvrError",
    "ProtocolError",
    "ProtocolReason",
    "SpeechError",
    "StoreError",
]

# A closed set so the handler can count errors per reason with a bounded label set,
# and so a typo in a raise site is a type error rather than a new metric.
ProtocolReason = Literal[
    "not_json",  # not UTF-8, not JSON, or non-standard JSON (NaN, nesting too deep)
    "not_object",  # valid JSON, but not an object
    "missing_field",
    "bad_type",  # a field has the wrong JSON type
    "bad_number",  # a numeric field is not a non-negative decimal integer
    "bad_value",  # right type, impossible value (empty tracks, zero sample rate)
    "bad_base64",
    "empty_payload",
    "bad_digit",  # DTMF digit outside 0-9 * # A-D
    "unknown_event",
    "oversized",
    "binary_frame",  # raised by the WebSocket handler: Twilio only sends text frames
    "bad_stream_sid",  # empty, or inconsistent within a frame or with the call's stream
    "media_before_start",  # raised by the WebSocket handler, which knows the call state
    "flood",  # audio arriving faster than real time (telephony.limits); the socket closes
    "no_start",  # no `start` in time after the socket opened; the socket closes
]


class IvrError(Exception):
    """Base of every exception ivr raises deliberately."""


class ProtocolError(IvrError):
    """A frame that violates the Media Streams protocol.

    `reason` is a short stable code for metrics and tests; the message is for humans.
    """

    def __init__(self, reason: ProtocolReason, message: str) -> None:
        # Both in args so the exception pickles (BaseException re-calls cls(*args)).
        super().__init__(reason, message)
        self.reason: ProtocolReason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class FlowError(IvrError):
    """A flow definition error, located in its source file when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        col: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.hint = hint

    def __str__(self) -> str:
        # The `file:line:col: message` shape is what editors and terminals turn into links.
        location = ":".join(
            str(part) for part in (self.file, self.line, self.col) if part is not None
        )
        text = f"{location}: {self.message}" if location else self.message
        return f"{text} ({self.hint})" if self.hint else text


class SpeechError(IvrError):
    """A speech engine (recognizer worker, synthesizer) failed."""


class StoreError(IvrError):
    """The call store could not read or write."""


class ConfigError(IvrError):
    """Settings are missing or invalid."""


class InvalidValue(IvrError, ValueError):
    """A value that cannot be accepted: bad constructor arguments, an unparsable field.

    Also a `ValueError` because libraries that call our code expect one: pydantic turns
    it into a validation error, argparse into a usage message, `json` passes it through.
    """
