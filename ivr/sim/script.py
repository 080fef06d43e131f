"""What the simulated caller does, in order: the script of one call.

Each action answers the next prompt: speak, press keys, barge in while the prompt is
still playing, stay silent, or hang up. `ActionArg` builds the same script from the
command line (`--say`, `--dtmf`, `--barge`, `--silence`, `--hangup`), keeping the
order in which the options were given.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ivr.errors import InvalidValue
from ivr.telephony.inbound import DTMF_DIGITS

__all__ = [
    "ActionArg",
    "Barge",
    "CallerAction",
    "PressKeys",
    "PutDown",
    "Say",
    "Silence",
]


@dataclass(frozen=True, slots=True)
class Say:
    """Answer the current prompt by speaking `text`, once the prompt has finished."""

    text: str


@dataclass(frozen=True, slots=True)
class PressKeys:
    """Answer the current prompt with DTMF digits, once the prompt has finished."""

    digits: str

    def __post_init__(self) -> None:
        bad = [d for d in self.digits if d not in DTMF_DIGITS]
        if not self.digits or bad:
            raise InvalidValue(f"DTMF digits must be 0-9 * # A-D, got {self.digits!r}")


@dataclass(frozen=True, slots=True)
class Barge:
    """Speak `text` `after_ms` after the next prompt's first audio arrives."""

    text: str
    after_ms: int = 500


@dataclass(frozen=True, slots=True)
class Silence:
    """Hear the prompt out, then say nothing for `ms` (to provoke no-input handling)."""

    ms: int


@dataclass(frozen=True, slots=True)
class PutDown:
    """Hang up: after the prompt finishes, or `after_ms` after it starts when given."""

    after_ms: int | None = None


CallerAction: TypeAlias = Say | PressKeys | Barge | Silence | PutDown


class ActionArg(argparse.Action):
    """argparse action that keeps `--say` / `--dtmf` / ... in command-line order.

    Give every action option the same `dest` (e.g. ``dest="actions"``); plain
    ``action="append"`` per option would lose how the options were interleaved.
    Accepted option names: --say TEXT, --dtmf DIGITS, --barge MS:TEXT, --silence MS,
    --hangup [MS].
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        actions: list[CallerAction] = list(getattr(namespace, self.dest, None) or [])
        value = values if isinstance(values, str) else None
        try:
            actions.append(_parse_action(option_string or "", value))
        except ValueError as exc:
            parser.error(f"{option_string}: {exc}")
        setattr(namespace, self.dest, actions)


def _parse_action(option: str, value: str | None) -> CallerAction:
    name = option.lstrip("-")
    if name == "say" and value:
        return Say(value)
    if name == "dtmf" and value:
        return PressKeys(value)
    if name == "barge" and value:
        ms, sep, text = value.partition(":")
        if not sep or not ms.isdigit() or not text:
            raise InvalidValue("expected MS:TEXT, e.g. 800:operator")
        return Barge(text, int(ms))
    if name == "silence" and value and value.isdigit():
        return Silence(int(value))
    if name == "hangup":
        if value is None:
            return PutDown()
        if value.isdigit():
            return PutDown(int(value))
    raise InvalidValue(f"bad value {value!r}")
