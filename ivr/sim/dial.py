"""Dialling, as Twilio does it before any audio: `POST /voice`, then the stream its TwiML names.

Twilio fetches the number's voice webhook (signed with `X-Twilio-Signature` over the
URL it used and the form), reads `<Connect><Stream url>` from the answer, opens that
WebSocket (the upgrade signed over the same URL) and copies the `<Parameter>`s into the
`start` frame's `customParameters`. The simulated caller does exactly that, so it
reaches `/media` only with what `/voice` issued, stream token included.

`call_urls` turns what a user types (`http://HOST:PORT`, or a `ws://HOST:PORT/media`
URL as before) into both the webhook base and the media URL the caller connects to.
The caller connects to that local URL even when the TwiML names a public one (a test
cannot reach `wss://ivr.example.com`), and signs the upgrade over the TwiML's URL, as
Twilio would.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit
from xml.etree import ElementTree

import aiohttp

from ivr.errors import IvrError

__all__ = ["CallUrls", "Dialled", "call_urls", "dial", "parse_stream_twiml", "voice_form"]

_MAX_TWIML = 64 * 1024


@dataclass(frozen=True, slots=True)
class CallUrls:
    base: str
    """`http(s)://host[:port][/prefix]`: where `/voice` and `/api` are."""
    media: str
    """`ws(s)://…/media`: the WebSocket the caller opens."""


@dataclass(frozen=True, slots=True)
class Dialled:
    """What `/voice` answered: the stream to open and the parameters its `start` carries."""

    stream_url: str
    parameters: dict[str, str]


def call_urls(url: str) -> CallUrls:
    """Both URLs of a server from `http://HOST:PORT` or `ws://HOST:PORT/media`."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if parts.scheme in ("ws", "wss") and parts.netloc:
        base_path = path.removesuffix("/media")
        http = "https" if parts.scheme == "wss" else "http"
        return CallUrls(urlunsplit((http, parts.netloc, base_path, "", "")),
                        urlunsplit((parts.scheme, parts.netloc, path or "/media", "", "")))
    if parts.scheme in ("http", "https") and parts.netloc:
        ws = "wss" if parts.scheme == "https" else "ws"
        return CallUrls(urlunsplit((parts.scheme, parts.netloc, path, "", "")),
                        urlunsplit((ws, parts.netloc, path + "/media", "", "")))
    raise IvrError(f"{url!r} is not a server URL (use http://HOST:PORT or ws://HOST:PORT/media)")


def voice_form(call_sid: str, account_sid: str, from_number: str, to_number: str) -> dict[str, str]:
    """The fields Twilio posts to the voice webhook for a ringing inbound call."""
    return {
        "AccountSid": account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid,
        "CallStatus": "ringing", "Called": to_number, "Caller": from_number,
        "Direction": "inbound", "From": from_number, "To": to_number,
    }


def parse_stream_twiml(xml: str) -> Dialled:
    """The `<Connect><Stream>` of a TwiML answer: its URL and its `<Parameter>`s."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise IvrError(f"/voice answered something that is not TwiML: {exc}") from None
    stream = root.find("./Connect/Stream") if root.tag == "Response" else None
    url = stream.get("url") if stream is not None else None
    if stream is None or not url:
        raise IvrError("/voice answered TwiML without <Connect><Stream url=…>")
    parameters: dict[str, str] = {}
    for p in stream.findall("Parameter"):
        name, value = p.get("name"), p.get("value")
        if name is None or value is None:
            raise IvrError("/voice answered a <Parameter> without a name or value")
        parameters[name] = value
    return Dialled(url, parameters)


async def dial(
    session: aiohttp.ClientSession,
    base: str,
    form: dict[str, str],
    *,
    flow: str | None = None,
    auth_token: str | None = None,
    public_url: str | None = None,
) -> Dialled:
    """`POST /voice` as Twilio would (`?flow=` pins a flow) and read the stream it names.

    With `auth_token` the request is signed over `public_url` (the base the server knows
    itself by; default `base`) plus the path and query, as Twilio signs it. The caller
    bounds the time it may take.
    """
    query = f"?flow={quote(flow, safe='')}" if flow else ""
    headers: dict[str, str] = {}
    if auth_token:
        from twilio.request_validator import RequestValidator

        signed = (public_url or base).rstrip("/") + "/voice" + query
        headers["X-Twilio-Signature"] = str(
            RequestValidator(auth_token).compute_signature(signed, form))
    url = base + "/voice" + query
    try:
        async with session.post(url, data=form, headers=headers) as resp:
            raw = bytearray()
            async for chunk in resp.content.iter_chunked(8192):
                raw += chunk
                if len(raw) > _MAX_TWIML:
                    break
            body = raw.decode("utf-8", "replace")
            if resp.status != 200:
                raise IvrError(f"{url} answered {resp.status}: {body[:200].strip()}")
    except (aiohttp.ClientError, OSError) as exc:
        raise IvrError(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc
    if len(raw) > _MAX_TWIML:
        raise IvrError(f"{url} answered more than {_MAX_TWIML} bytes of TwiML")
    return parse_stream_twiml(body)
