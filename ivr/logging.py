"""structlog JSON logs; every call binds `call_sid` and `stream_sid` to its logger."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, json: bool = True) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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


def mask_number(number: str) -> str:
    """Keep a phone number useful for support without storing it: +14155550123 -> +1415***0123."""
    if not number:
        return ""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:5] + "***" + number[-4:]
