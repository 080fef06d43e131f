"""structlog JSON logs; every call binds `call_sid` and `stream_sid` to its logger.

Personal data: what callers say or key and what prompts read back log at debug level
only; phone numbers are logged through `mask_number`; with `redact_digits` (the
`IVR_REDACT_DIGITS=1` setting) `RedactDigits` masks digit runs in every event.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from ivr.privacy import redact_digits

__all__ = ["RedactDigits", "configure", "mask_number"]


def configure(level: str = "info", *, json: bool = True, redact_digits: bool = False) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    # Redaction runs before the time stamp and the traceback are added: neither is what a
    # caller said, and both carry digit runs (a year, line numbers) worth keeping.
    redact: list[structlog.typing.Processor] = [RedactDigits()] if redact_digits else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *redact,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        # sys.stderr looked up per logger, not bound once: whoever swaps it later (test
        # capture, a daemonizing wrapper) must not leave us writing to a closed file.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


class RedactDigits:
    """A structlog processor: digit runs of 4+ masked in every string of an event, nested
    lists and dicts included, except in identifiers (`*_sid`: a Twilio SID is hex, and
    masking its digits would break following one call through the log) and the
    exception being logged."""

    _KEEP = frozenset({"exc_info", "stack_info"})

    def __call__(
        self, _logger: Any, _method: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        return {
            key: value if key in self._KEEP or key.endswith("sid") else _redacted(value)
            for key, value in event_dict.items()
        }


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_digits(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redacted(v) for v in value)
    return value


def mask_number(number: str) -> str:
    """A phone number as logs and call records show it: its last 2 digits, enough to tell
    a support agent "the call from the number ending 23": +14155550123 -> +*********23."""
    if not number:
        return ""
    plus = "+" if number.startswith("+") else ""
    rest = number[len(plus):]
    if len(rest) <= 4:
        return plus + "*" * len(rest)
    return plus + "*" * (len(rest) - 2) + rest[-2:]
