"""Phone numbers: how they are stored and compared, and which caller IDs identify nobody.

A leaf shared by `telephony` (the stream token vouches for the caller's identity) and
`tools` (a tool acts only for that identity), so both apply one rule.
"""

from __future__ import annotations

import re
from typing import Final

from ivr.errors import InvalidValue

__all__ = ["WITHHELD_NUMBERS", "caller_identity", "normalize_phone"]

_PHONE_JUNK_RE: Final = re.compile(r"[\s().\-/]")
_PHONE_RE: Final = re.compile(r"^\+?[0-9]{3,15}$")

_KEYPAD: Final = {c: d for d, letters in (("2", "ABC"), ("3", "DEF"), ("4", "GHI"),
                                          ("5", "JKL"), ("6", "MNO"), ("7", "PQRS"),
                                          ("8", "TUV"), ("9", "WXYZ"))
                  for c in letters}
# A withheld caller ID reaches us as a word or, from Twilio, as the word spelt on a keypad
# ("+266696687" is ANONYMOUS): a number every withheld caller shares, so never an identity.
_WITHHELD_WORDS: Final = ("ANONYMOUS", "RESTRICTED", "UNAVAILABLE", "UNKNOWN", "PRIVATE",
                          "BLOCKED")
WITHHELD_NUMBERS: Final = frozenset("+" + "".join(_KEYPAD[c] for c in w) for w in _WITHHELD_WORDS)


def normalize_phone(text: str) -> str:
    """A phone number as stored: E.164 when we can tell, else its digits.

    Ten digits are read as a North American number (+1), as Twilio numbers here are; that
    makes a number the caller keys in match the caller ID Twilio reports.
    """
    s = _PHONE_JUNK_RE.sub("", text.strip())
    if not s:
        return ""
    if not _PHONE_RE.match(s):
        raise InvalidValue(f"{text!r} is not a phone number")
    if s.startswith("+"):
        return s
    if len(s) == 10:
        return "+1" + s
    if len(s) == 11 and s.startswith("1"):
        return "+" + s
    return s


def caller_identity(caller_id: str) -> str:
    """A caller ID as an identity: the number as stored, or "" for an anonymous caller.

    A caller ID that is not a number ("anonymous", a SIP URI, a `client:` name) or is
    one of the withheld-ID placeholders identifies nobody: tools that need a caller must
    not act on it.
    """
    try:
        number = normalize_phone(caller_id)
    except InvalidValue:
        return ""
    withheld = number in WITHHELD_NUMBERS or "+" + number in WITHHELD_NUMBERS
    return "" if withheld else number
