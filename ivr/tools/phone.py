"""Phone numbers as tools store and compare them (E.164 when we can tell), and the one
rule for whose data a tool may touch: the verified caller's own.

`ToolContext.caller` is the number the call's signed stream token vouches for (`ivr chat`
and flow tests: the number they were given). A tool that acts for a person acts for that
number only: a `phone` argument may repeat it, in any spelling, but never name someone
else, and a caller without a number (withheld caller ID) gets a refusal that says why.
"""

from __future__ import annotations

from typing import Any

from ivr import phone
from ivr.errors import InvalidValue
from ivr.phone import caller_identity
from ivr.tools.base import ToolContext, ToolError

__all__ = [
    "ANONYMOUS_CALLER",
    "OTHER_NUMBER",


    "caller_number",
    "normalize_phone",
    "own_number",
]

# Refusals a flow's on_error or a model can act on; `value["reason"]` tells them apart.
ANONYMOUS_CALLER = "anonymous_caller"
OTHER_NUMBER = "other_number"


def normalize_phone(text: str) -> str:
    """A phone number as stored (see `ivr.phone.normalize_phone`); a tool error if it is
    not one."""
    try:
        return phone.normalize_phone(text)
    except InvalidValue as exc:
        raise ToolError(str(exc)) from None


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
