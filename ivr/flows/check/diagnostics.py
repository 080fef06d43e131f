"""How problems in a flow are told: a `Finding` (a location in the flow document, what is
wrong, the fix, a severity) from the checks, an `Issue` once located at `file:line:col`
(what `ivr flows check` prints), and the wording helpers both use."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ivr.errors import FlowError
from ivr.flows.model import Loc

__all__ = ["Finding", "Issue", "Severity", "closest", "field_name", "suggest", "where"]

Severity: TypeAlias = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem at `loc` in the flow document; `at_key` points at the key, not the value."""

    loc: Loc
    message: str
    hint: str | None = None
    at_key: bool = False
    severity: Severity = "error"


@dataclass(frozen=True, slots=True)
class Issue:
    """A located problem, as `ivr flows check` prints it: `file:line:col: severity: ...`."""

    file: str | None
    line: int | None
    col: int | None
    message: str
    fix: str | None = None
    severity: Severity = "error"

    @property
    def hint(self) -> str | None:
        # FlowError calls the fix a hint; both spellings work so either can be printed.
        return self.fix

    def to_error(self) -> FlowError:
        return FlowError(self.message, file=self.file, line=self.line, col=self.col, hint=self.fix)

    @classmethod
    def from_error(cls, error: FlowError, severity: Severity = "error") -> Issue:
        return cls(error.file, error.line, error.col, error.message, error.hint, severity)

    def __str__(self) -> str:
        location = ":".join(str(p) for p in (self.file, self.line, self.col) if p is not None)
        text = f"{self.severity}: {self.message}"
        text = f"{location}: {text}" if location else text
        return f"{text} ({self.fix})" if self.fix else text


def where(loc: Loc) -> str:
    """A human name for the container at `loc`: "step 'menu', choice 2, dtmf"."""
    if not loc:
        return "flow"
    parts: list[str] = []
    rest: Loc = loc
    if loc[0] in ("steps", "slots") and len(loc) >= 2:
        parts.append(f"{'step' if loc[0] == 'steps' else 'slot'} '{loc[1]}'")
        rest = loc[2:]
    i = 0
    while i < len(rest):
        elem = rest[i]
        if elem in ("choices", "branch") and i + 1 < len(rest) and isinstance(rest[i + 1], int):
            noun = "choice" if elem == "choices" else "case"
            parts.append(f"{noun} {int(rest[i + 1]) + 1}")
            i += 2
            continue
        parts.append(f"item {elem + 1}" if isinstance(elem, int) else str(elem))
        i += 1
    return ", ".join(parts)


def field_name(loc: Loc) -> tuple[Loc, str]:
    """(container location, name of the field) for a value error at `loc`."""
    if not loc:
        return (), "flow"
    if isinstance(loc[-1], int) and len(loc) >= 2:
        return loc[:-2], f"{loc[-2]}[{loc[-1] + 1}]"
    return loc[:-1], str(loc[-1])


def closest(word: str, candidates: Iterable[str]) -> str | None:
    options = list(candidates)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return found[0] if found else None


def suggest(word: str, candidates: Iterable[str], noun: str) -> str:
    options = list(candidates)
    best = closest(word, options)
    listed = ", ".join(options[:10]) + (", ..." if len(options) > 10 else "")
    if not options:
        return f"there are no {noun}"
    if best is not None:
        return f"did you mean '{best}'? {noun}: {listed}"
    return f"{noun}: {listed}"
