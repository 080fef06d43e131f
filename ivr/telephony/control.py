"""Call control beyond the stream: transfers.

With `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN` set, a transfer redirects the live call
through Twilio's REST API (`calls(sid).update(twiml=<Dial>)`), which also ends the
stream. Without credentials the number is parked for `/connect-action` and the session
closes the stream: Twilio then fetches `<Connect action>` and gets the `<Dial>`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from twilio.twiml.voice_response import VoiceResponse

from ivr.config import Settings
from ivr.logging import mask_number

log = structlog.get_logger("ivr.control")
REST_TIMEOUT_S = 10.0


def dial_twiml(number: str) -> str:
    response = VoiceResponse()
    response.dial(number)
    return str(response.to_xml())


async def transfer(
    settings: Settings, park: Callable[[str, str], Awaitable[None]], call_sid: str,
    number: str,
) -> str:
    """Start a transfer; returns how: "rest" or "connect_action" (the number is then
    parked under the call SID with `park(call_sid, number)`, for `/connect-action` to
    dial, in whichever process Twilio's request reaches)."""
    s = settings
    if s.twilio_account_sid and s.twilio_auth_token:
        from twilio.rest import Client

        def update() -> None:
            Client(s.twilio_account_sid, s.twilio_auth_token).calls(call_sid).update(
                twiml=dial_twiml(number))

        try:
            # The twilio client is synchronous: keep it off the event loop, bounded.
            await asyncio.wait_for(asyncio.to_thread(update), REST_TIMEOUT_S)
            log.info("transfer", call_sid=call_sid, to=mask_number(number), via="rest")
            return "rest"
        except Exception as exc:  # any REST failure falls back to the TwiML path
            log.warning("transfer_rest_failed", call_sid=call_sid, error=repr(exc))
    await park(call_sid, number)
    log.info("transfer", call_sid=call_sid, to=mask_number(number), via="connect_action")
    return "connect_action"
