"""Phone numbers as tools store and compare them (E.164 when we can tell), and the one
rule for whose data a tool may touch: the verified caller's own.

`ToolContext.caller` is the number the call's signed stream token vouches for (`ivr chat`
and flow tests: the number they were given). A tool that acts for a person acts for that
number only: a `phone` argument may repeat it, in any spelling, but never name someone
else, and a caller without a number (withheld caller ID) gets a refusal that says why.
"""

from __future__ import annotations

import re
from typing import Any

from ivr.tools.base import ToolContext, ToolError

__all__ = [
    "ANONYMOUS_CALLER",
    "OTHER_NUMBER",
    "WITHHELD_NUMBERS",
    "caller_identity",
    "caller_number",
    "normalize_phone",
    "own_number",
]

_PHONE_JUNK_RE = re.compile(r"[\s().\-/]")
_PHONE_RE = re.compile(r"^\+?[0-9]{3,15}$")

_KEYPAD = {c: d for d, letters in (("2", "ABC"), ("3", "DEF"), ("4", "GHI"), ("5", "JKL"),
                                   ("6", "MNO"), ("7", "PQRS"), ("8", "TUV"), ("9", "WXYZ"))
           for c in letters}
# A withheld caller ID reaches us as a word or, from Twilio, as the word spelt on a keypad
# ("+266696687" is ANONYMOUS): a number every withheld caller shares, so never an identity.
_WITHHELD_WORDS = ("ANONYMOUS", "RESTRICTED", "UNAVAILABLE", "UNKNOWN", "PRIVATE", "BLOCKED")
WITHHELD_NUMBERS = frozenset("+" + "".join(_KEYPAD[c] for c in w) for w in _WITHHELD_WORDS)

# Refusals a flow's on_error or a model can act on; `value["reason"]` tells them apart.
ANONYMOUS_CALLER = "anonymous_caller"
OTHER_NUMBER = "other_number"


def normalize_phone(text: str) -> str:
    """A phone number as stored: E.164 when we can tell, else its digits.

    Ten digits are read as a North American number (+1), as Twilio numbers here are; that
    makes a number the caller keys in match the caller ID Twilio reports.
    """
    s = _PHONE_JUNK_RE.sub("", text.strip())
    if not s:
        return ""
    if not _PHONE_RE.match(s):
        raise ToolError(f"{text!r} is not a phone number")
    if s.startswith("+"):
        return s
    if len(s) == 10:
        return "+1" + s
    if len(s) == 11 and s.startswith("1"):
        return "+" + s
    return s


def caller_identity(caller_id: str) -> str:
    """A caller ID as an identity: the number as stored, or "" for an anonymous caller.

    A caller ID that is not a number ("anonymous", a SIP client) or is one of the
    withheld-ID placeholders is no identity at all.
    """
    try:
        number = normalize_phone(caller_id)
    except ToolError:
        return ""
    return "" if number in WITHHELD_NUMBERS else number


def caller_number(ctx: ToolContext) -> str:
    """The verified caller's number as stored, or "" for an anonymous caller."""
    return caller_identity(ctx.caller)


def own_number(args: dict[str, Any], ctx: ToolContext, *, what: str, key: str = "phone") -> str:
    """The verified caller's number, for a tool that acts for the caller (`what`:
    "look up or change bookings", ...).

    Refused with a `ToolError` when the caller is anonymous, or when `args[key]` names
    another number: a caller reaches only their own data, whatever they (or a model
    they talk to) say the number is.
    """
    mine = caller_number(ctx)
    if not mine:
        raise ToolError(
            f"the caller's number is withheld, so I can't {what} on this call; they can call "
            "again from their own phone, or speak to a person",
            {"reason": ANONYMOUS_CALLER},
        )
    given = args.get(key)
    if isinstance(given, str) and given.strip() and normalize_phone(given) != mine:
        raise ToolError(
            f"I can only {what} for the number the caller is calling from, not another "
            "number; to do it for someone else, they need to call from that number",
            {"reason": OTHER_NUMBER},
        )
    return mine
