"""Read-only lookups: an order's status, the caller's account.

Values come back in forms the bot can say as they are ("12 dollars and 50 cents").
Details are the verified caller's own only (`ivr.tools.phone`): an order placed under
another number (or looked up by an anonymous caller) comes back as found but needing
verification, with nothing more than its number; the account is always the caller's own,
a `phone` argument naming another number is refused, and an anonymous caller has none.
"""

from __future__ import annotations

import re
from typing import Any

from ivr.tools.base import BUSY_TIMEOUT_S, Tool, ToolContext, ToolError
from ivr.tools.phone import caller_number, own_number

_ORDER_RE = re.compile(r"^[A-Z0-9]{1,20}$")


def normalize_order_number(value: str | int) -> str:
    """Order "4567" from "#4567", "45 67" or 4567: models and callers write all three."""
    s = re.sub(r"[\s#\-]", "", str(value)).upper()
    if not _ORDER_RE.match(s):
        raise ToolError(f"{value!r} is not an order number; order numbers are like 4567")
    return s


def spoken_money(cents: int) -> str:
    """1250 -> "12 dollars and 50 cents", 100 -> "1 dollar", 5 -> "5 cents"."""
    dollars, rest = divmod(abs(cents), 100)
    parts: list[str] = []
    if dollars or not rest:
        parts.append(f"{dollars} dollar{'' if dollars == 1 else 's'}")
    if rest:
        parts.append(f"{rest} cent{'' if rest == 1 else 's'}")
    return ("minus " if cents < 0 else "") + " and ".join(parts)


async def order_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    number = normalize_order_number(args["order_number"])
    async with ctx.db() as conn:
        rows = await conn.fetch(
            "SELECT number, status, item, eta, phone FROM orders WHERE number = ?", (number,)
        )
    if not rows:
        raise ToolError(f"no order with number {number}")
    row = rows[0]
    mine = caller_number(ctx)
    if not mine or row["phone"] != mine:
        return {"number": row["number"], "verified": False,
                "note": ("this order is not under the number the caller is calling from; "
                         "its details can only be given once a person has verified them")}
    return {"number": row["number"], "verified": True, "status": row["status"],
            "item": row["item"], "eta": row["eta"]}


async def account_by_phone(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    phone = own_number(args, ctx, what="look up an account")
    async with ctx.db() as conn:
        rows = await conn.fetch(
            "SELECT name, plan, balance_cents FROM accounts WHERE phone = ?", (phone,)
        )
    if not rows:
        raise ToolError("no account under the caller's number")
    row = rows[0]
    cents = int(row["balance_cents"])
    return {"name": row["name"], "plan": row["plan"], "balance": spoken_money(cents),
            "balance_cents": cents}


TOOLS: tuple[Tool, ...] = (
    Tool(
        name="lookups.order_status",
        description=("Status, item and expected delivery date (eta) of an order by its "
                     "number; only for the caller's own orders (`verified`), otherwise the "
                     "order is found but its details need verification by a person."),
        parameters={
            "type": "object",
            "properties": {
                "order_number": {
                    "type": ["string", "integer"],
                    "description": "the order number, e.g. 4567",
                },
            },
            "required": ["order_number"],
            "additionalProperties": False,
        },
        handler=order_status,
        timeout_s=BUSY_TIMEOUT_S,
    ),
    Tool(
        name="lookups.account_by_phone",
        description=("The caller's own account (found by the number they call from): the "
                     "holder's name, plan and balance."),
        parameters={
            "type": "object",
            "properties": {
                "phone": {
                    "type": "string", "maxLength": 32,
                    "description": "leave out: always the caller's own number "
                                   "(another is refused)",
                },
            },
            "required": [],
            "additionalProperties": False,
        },
        handler=account_by_phone,
        timeout_s=BUSY_TIMEOUT_S,
    ),
)
