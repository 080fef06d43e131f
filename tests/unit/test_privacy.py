"""Personal data in what we keep: digit runs masked in text and logs, phone numbers shown
by their last 2 digits."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from ivr.config import Settings
from ivr.errors import ConfigError
from ivr.logging import RedactDigits, configure, mask_number
from ivr.privacy import redact_digits


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("4567", "****"),
        ("order 4567 please", "order **** please"),
        ("four five six seven", "****"),
        ("Order four five six seven, your headphones, is shipped.",
         "Order ****, your headphones, is shipped."),
        ("Four oh six one", "****"),
        ("4 5 6 7#", "****#"),
        ("4-5-6-7", "****"),
        ("card 4111111111111111", "card ****************"),
        ("+14155550123", "+***********"),
    ],
)
def test_digit_runs_of_four_or_more_are_masked(text: str, masked: str) -> None:
    """Figures or digit words, together or apart: one star a digit."""
    assert redact_digits(text) == masked


@pytest.mark.parametrize(
    "text",
    ["press 2", "one two three", "at 10:30", "$12.50", "someone two three four",
     "one hundred twenty three", "nineteen four five six", ""],
)
def test_short_runs_and_other_numbers_stay_readable(text: str) -> None:
    """Menu choices, times, prices, spelled-out numbers, words that contain a digit word."""
    assert redact_digits(text) == text


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14155550123", "+*********23"),
        ("+15550100001", "+*********01"),
        ("4155550123", "********23"),
        ("+1234", "+****"),
        ("12", "**"),
        ("", ""),
    ],
)
def test_mask_number_keeps_only_the_last_two_digits(number: str, masked: str) -> None:
    assert mask_number(number) == masked


def test_mask_number_hides_all_but_two_digits_of_any_length() -> None:
    """However long the number, at most 2 of its digits survive."""
    for length in range(1, 16):
        masked = mask_number("+" + "7" * length)
        assert masked.count("7") == (2 if length > 4 else 0), masked
        assert len(masked) == length + 1


@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    saved = {**saved, "processors": list(saved["processors"])}
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("restore_logging")
def test_redact_digits_processor_masks_every_string_but_identifiers() -> None:
    """Values, nested ones included, are masked; call and stream SIDs are left whole."""
    configure("info")
    processor = RedactDigits()
    sid = "CA" + "1234567890" * 3 + "ab"
    with capture_logs(processors=[processor]) as logs:
        structlog.get_logger("t").info(
            "turn", call_sid=sid, stream_sid=sid, text="four five six seven",
            error="no order with number 4567", seq=1234, nested={"a": ["9999", ("8888",)]},
        )
    (event,) = logs
    assert event["call_sid"] == sid and event["stream_sid"] == sid
    assert event["text"] == "****"
    assert event["error"] == "no order with number ****"
    assert event["seq"] == 1234  # numbers are counts and timings, not what a caller said
    assert event["nested"] == {"a": ["****", ("****",)]}


@pytest.mark.usefixtures("restore_logging")
def test_configure_with_redact_digits_masks_the_json_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`configure(redact_digits=True)` (IVR_REDACT_DIGITS=1 for `ivr serve`) masks what is
    written; without it the text is logged as it is (at debug level)."""
    configure("debug", redact_digits=True)
    structlog.get_logger("t").debug("recognized", text="my order is 4567")
    line = json.loads(capsys.readouterr().err)
    assert line["text"] == "my order is ****"
    assert line["timestamp"][:4].isdigit()  # the time stamp is not a caller's digits

    configure("debug")
    structlog.get_logger("t").debug("recognized", text="my order is 4567")
    assert json.loads(capsys.readouterr().err)["text"] == "my order is 4567"


# Keyword names under which what a caller said or keyed, or a prompt's text, is logged.
SPOKEN = {"text", "digit", "digits", "prompt", "understood", "said"}


def test_what_callers_say_and_prompts_log_at_debug_only() -> None:
    """No info/warning/error log call in the call path carries recognized text, keys or a
    prompt's text: at the default level none of it is written."""
    root = Path(__file__).resolve().parents[2] / "ivr"
    found = []
    for package in ("session", "dialog", "telephony", "tools", "llm"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("info", "warning", "error", "exception")
                        and {k.arg for k in node.keywords} & SPOKEN):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


def test_personal_data_settings_from_the_environment() -> None:
    s = Settings.from_env({"IVR_REDACT_DIGITS": "1", "IVR_RETENTION_DAYS": "30"})
    assert s.redact_digits is True and s.retention_days == 30
    s = Settings.from_env({"IVR_REDACT_DIGITS": "off"})
    assert s.redact_digits is False and s.retention_days == 0  # defaults: keep everything
    with pytest.raises(ConfigError, match="IVR_REDACT_DIGITS='maybe'"):
        Settings.from_env({"IVR_REDACT_DIGITS": "maybe"})
    with pytest.raises(ConfigError, match="IVR_RETENTION_DAYS=-1"):
        Settings.from_env({"IVR_RETENTION_DAYS": "-1"})
