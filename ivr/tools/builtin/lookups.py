"""Read-only lookups: an order's status, an account by phone number.

Values come back in forms the bot can say as they are ("12 dollars and 50 cents").
Anyone who knows an order number or a phone number can look it up: these are demo
lookups with no caller verification, so they return nothing more sensitive than that.
"""

from __future__ import annotations

import re
from typing import Any

from ivr.tools.base import BUSY_TIMEOUT_S, Tool, ToolContext, ToolError
from ivr.tools.phone import phone_arg

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
        rows = list(await conn.execute_fetchall(
            "SELECT number, status, item, eta FROM orders WHERE number = ?", (number,)
        ))
    if not rows:
        raise ToolError(f"no order with number {number}")
    row = rows[0]
    return {"number": row["number"], "status": row["status"], "item": row["item"],
            "eta": row["eta"]}


async def account_by_phone(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    phone = phone_arg(args, ctx)
    if not phone:
        raise ToolError("I need a phone number to find the account")
    async with ctx.db() as conn:
        rows = list(await conn.execute_fetchall(
            "SELECT name, plan, balance_cents FROM accounts WHERE phone = ?", (phone,)
        ))
    if not rows:
        raise ToolError("no account with that phone number")
    row = rows[0]
    cents = int(row["balance_cents"])
    return {"name": row["name"], "plan": row["plan"], "balance": spoken_money(cents),
            "balance_cents": cents}


TOOLS: tuple[Tool, ...] = (
    Tool(
        name="lookups.order_status",
        description="Status, item and expected delivery date (eta) of an order by its number.",
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
        description=("The account holder's name, plan and balance for a phone number "
                     "(default: the caller's own number)."),
        parameters={
            "type": "object",
            "properties": {
                "phone": {
                    "type": "string", "maxLength": 32,
                    "description": "phone number; omit to use the caller's own number",
                },
            },
            "required": [],
            "additionalProperties": False,
        },
        handler=account_by_phone,
        timeout_s=BUSY_TIMEOUT_S,
    ),
)
