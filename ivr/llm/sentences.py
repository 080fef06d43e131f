"""Cut streamed model text into sentences, each released as soon as it is complete.

Each sentence goes to synthesis on its own, so the caller hears the first one while the
model is still writing the rest. A sentence ends at ".", "!" or "?" (possibly repeated,
possibly followed by closing quotes or brackets) followed by white space, or at a line
break. The end of the text so far is never a boundary: "3." may be the start of "3.5",
and "Dr." may be followed by a name; `flush()` releases whatever is left at the end.
"""

from __future__ import annotations

import re

__all__ = ["SentenceSplitter"]

# Lower-cased words that end in a period without ending a sentence.
ABBREVIATIONS = frozenset({
    "dr", "mr", "mrs", "ms", "mx", "prof", "sr", "jr", "st", "mt", "ft", "rd", "ave",
    "vs", "etc", "e.g", "i.e", "approx", "appt", "dept", "est", "no", "tel", "ext",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri", "sat", "sun",
    "a.m", "p.m", "u.s", "inc", "ltd", "co", "corp",
})

_BOUNDARY = re.compile(r"[.!?]+[\"')\]\u201d\u2019]*(?=\s)|\n")
_LAST_WORD = re.compile(r"(\S+)$")


class SentenceSplitter:
    def __init__(self) -> None:
        self._buf = ""

    def push(self, text: str) -> list[str]:
        """Add streamed text; returns the sentences it completed (stripped, non-empty)."""
        self._buf += text
        out: list[str] = []
        start = 0
        # Rescanning the unfinished rest each time is cheap (it is under a sentence long)
        # and simpler than tracking where an undecided boundary began.
        for m in _BOUNDARY.finditer(self._buf):
            if m.group() != "\n" and m.group()[0] == "." and self._is_abbreviation(start, m):
                continue
            sentence = self._buf[start:m.end()].strip()
            if sentence:
                out.append(sentence)
            start = m.end()
        self._buf = self._buf[start:]
        return out

    def flush(self) -> str | None:
        """The unfinished rest, if any; the splitter is empty afterwards."""
        rest = self._buf.strip()
        self._buf = ""
        return rest or None

    def _is_abbreviation(self, start: int, m: re.Match[str]) -> bool:
        word = _LAST_WORD.search(self._buf, start, m.start())
        if word is None:
            return False
        token = word.group(1).lstrip("\"'(\u201c\u2018").lower()
        # A lone letter before a period is an initial ("J. Smith"), not a sentence end;
        # "I" and "a" are words that can end one.
        initial = len(token) == 1 and token.isalpha() and token not in "ia"
        return token in ABBREVIATIONS or initial
