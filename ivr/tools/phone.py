"""Phone numbers as tools store and compare them (E.164 when we can tell)."""

from __future__ import annotations

import re
from typing import Any

from ivr.tools.base import ToolContext, ToolError

__all__ = ["normalize_phone", "phone_arg"]

_PHONE_JUNK_RE = re.compile(r"[\s().\-/]")
_PHONE_RE = re.compile(r"^\+?[0-9]{3,15}$")


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


def phone_arg(args: dict[str, Any], ctx: ToolContext, key: str = "phone") -> str:
    """The phone argument, or the caller's number when it was omitted; "" if neither.

    A caller ID that is not a number ("anonymous", a SIP client) counts as no number
    rather than an error: the bot should ask for one.
    """
    given = args.get(key)
    if isinstance(given, str) and given.strip():
        return normalize_phone(given)
    try:
        return normalize_phone(ctx.caller)
    except ToolError:
        return ""
