"""Twilio's HTTP side: the `/voice` webhook (TwiML), `/status` callbacks, signatures.

Signatures are computed by Twilio over the URL *it* used, so we rebuild that URL from
`IVR_PUBLIC_URL` (or, with `IVR_TRUST_PROXY=1` only, the proxy's forwarded headers) and
the path and query exactly as they arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Mapping

import structlog
from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from ivr.errors import InvalidValue
from ivr.logging import mask_number
from ivr.server import access
from ivr.server.admission import ADMISSION
from ivr.server.services import SERVICES, Services

log = structlog.get_logger("ivr.telephony")

# Twilio caps each <Parameter> name+value at 500 characters.
_MAX_PARAM = 500


# Twilio's documented stream status events; any other value is counted as "other", so
# an unsigned post cannot mint counter keys.
STREAM_EVENTS = frozenset({"stream-started", "stream-stopped", "stream-error"})


def public_base(services: Services, request: web.Request) -> str:
    """https://host[/prefix] as Twilio sees us."""
    return access.public_base(services.settings, request)


def signed_url(services: Services, request: web.Request, *, websocket: bool = False) -> str:
    """The URL Twilio signed for this request: our public base, then the path and query
    as sent (`raw_path`: a re-encoded one can differ, `%41` against `A`)."""
    base = public_base(services, request)
    if websocket:
        scheme, _, rest = base.partition("://")
        base = ("wss" if scheme == "https" else "ws") + "://" + rest
    return base + request.raw_path


def media_url(base: str) -> str:
    """The WebSocket URL for <Stream>: Twilio requires wss:// in production."""
    scheme, _, rest = base.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/media"


def stream_twiml(
    url: str, parameters: Mapping[str, str], *, status_url: str | None,
    action_url: str | None = None, busy_message: str | None = None,
) -> str:
    """<Connect><Stream> with the call's parameters; then `busy_message`, which Twilio
    speaks when the stream ends without `action` (with `action`, the action URL answers
    instead: see `connect_action`)."""
    response = VoiceResponse()
    # Twilio fetches `action` when the stream closes: that is where a transfer gets its <Dial>.
    connect = Connect(action=action_url) if action_url else Connect()
    stream = connect.stream(url=url, **(
        {"status_callback": status_url, "status_callback_method": "POST"} if status_url else {}
    ))
    for name, value in parameters.items():
        if value and len(name) + len(value) < _MAX_PARAM:
            stream.parameter(name=name, value=value)
    response.append(connect)
    if busy_message:
        response.say(busy_message)
    return str(response.to_xml())


def busy_twiml(mode: str, message: str) -> str:
    """What a call turned away at `/voice` gets: a busy tone (`reject`: never answered,
    never billed) or `message` spoken, then hang-up."""
    response = VoiceResponse()
    if mode == "reject":
        response.reject(reason="busy")
    else:
        response.say(message)
        response.hangup()
    return str(response.to_xml())


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/xml")


def signature_ok(services: Services, url: str, params: Mapping[str, str], sig: str | None) -> bool:
    token = services.settings.twilio_auth_token
    if not token:
        return True  # validation is off until TWILIO_AUTH_TOKEN is set
    if not sig:
        return False
    return bool(RequestValidator(token).validate(url, dict(params), sig))


async def _signed_form(request: web.Request) -> dict[str, str]:
    services = request.app[SERVICES]
    form = {k: str(v) for k, v in (await request.post()).items()}
    url = signed_url(services, request)
    if not signature_ok(services, url, form, request.headers.get("X-Twilio-Signature")):
        services.counters["signature_rejected"] += 1
        log.warning("signature_rejected", path=request.path, url=url)
        raise web.HTTPForbidden(text="invalid X-Twilio-Signature\n")
    return form


async def voice(request: web.Request) -> web.Response:
    """Twilio's voice webhook: connect the call to our media stream."""
    services = request.app[SERVICES]
    form = await _signed_form(request)
    base = public_base(services, request)
    call_sid = form.get("CallSid", "")
    s = services.settings
    if request.app[ADMISSION].refuse("voice") is not None:
        return _xml(busy_twiml(s.busy, s.busy_message))
    # Only an explicit ?flow= pins the flow; otherwise the session routes by called number.
    flow = request.query.get("flow") or form.get("flow") or ""
    # The stream's `start` must carry these back, signed: the caller, the called number
    # and the flow reach the call only through this token (telephony/stream_token.py).
    try:
        params = services.stream_tokens.issue(call_sid, form.get("From", ""),
                                              form.get("To", ""), flow)
    except InvalidValue as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if any(len(k) + len(v) >= _MAX_PARAM for k, v in params.items()):
        # Twilio would drop the parameter and the start would fail its token: say so now.
        raise web.HTTPBadRequest(text="From, To or flow is too long for a <Parameter>\n")
    log.info("voice_webhook", call_sid=call_sid, flow=flow,
             caller=mask_number(params["from"]))
    return _xml(stream_twiml(media_url(base), params, status_url=base + "/status",
                             action_url=base + "/connect-action",
                             busy_message=s.busy_message))


async def connect_action(request: web.Request) -> web.Response:
    """The stream has closed: dial the transfer target the flow chose, or hang up; a
    call whose stream never started (refused at `/media`: full, lagging, draining) hears
    the busy message first rather than silence."""
    services = request.app[SERVICES]
    form = await _signed_form(request)
    call_sid = form.get("CallSid", "")
    number = await services.take_transfer(call_sid)
    response = VoiceResponse()
    if number:
        log.info("transfer_dial", call_sid=call_sid, to=mask_number(number))
        response.dial(number)
        return _xml(str(response.to_xml()))
    if not await _stream_started(services, call_sid):
        log.info("stream_never_started", call_sid=call_sid)
        response.say(services.settings.busy_message)
    response.hangup()
    return _xml(str(response.to_xml()))


async def _stream_started(services: Services, call_sid: str) -> bool:
    """Whether a stream of this call reached `start` (its row has a stream SID). The
    refusal at `/media` comes before the upgrade, when the call SID is not known yet
    (it arrives in `start`), so the record is what tells; it is shared by every process
    on one database, whichever of them Twilio's action request reaches."""
    if services.store is None or not call_sid:
        return True
    call = await services.store.get_call(call_sid)
    return call is not None and bool(call.get("stream_sid"))


async def status(request: web.Request) -> web.Response:
    """Call and stream status callbacks; a call that never reached /media gets a record."""
    services = request.app[SERVICES]
    form = await _signed_form(request)
    call_sid = form.get("CallSid", "")
    if not call_sid:
        raise web.HTTPBadRequest(text="CallSid is required\n")
    stream_event = form.get("StreamEvent")
    if stream_event:
        event = stream_event if stream_event in STREAM_EVENTS else "other"
        services.counters[f"stream_event_{event}"] += 1
        log.info("stream_status", call_sid=call_sid, stream_event=event,
                 error=(form.get("StreamError") or "")[:200] or None)
        return web.Response(status=204)
    call_status = form.get("CallStatus", "")
    if not call_status:
        raise web.HTTPBadRequest(text="CallStatus or StreamEvent is required\n")
    duration = form.get("CallDuration")
    if services.store is not None:
        await services.store.call_status(
            call_sid,
            status=call_status,
            duration_s=float(duration) if duration and duration.isdigit() else None,
            from_masked=mask_number(form.get("From", "")),
            to_masked=mask_number(form.get("To", "")),
            account_sid=form.get("AccountSid"),
        )
    log.info("call_status", call_sid=call_sid, status=call_status, duration=duration)
    return web.Response(status=204)


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))  # Linux; a few microseconds
    except OSError:
        return None


async def healthz(request: web.Request) -> web.Response:
    """Up or down for anyone; engines, counters and cache for a local client or an
    operator (the counters say what attacks were seen, the flows what the service does)."""
    services = request.app[SERVICES]
    if not (access.local_client(request)
            or access.operator(request, also=services.settings.metrics_token)):
        return web.json_response({"ok": True})
    body: dict[str, object] = {
        "ok": True,
        "active_calls": len(services.calls),
        # Which process answered: `ivr serve --processes N` runs several on one port.
        "pid": os.getpid(),
        "instance_id": services.store.instance_id if services.store is not None else None,
        "flows": sorted(services.flows),
        "counters": dict(services.counters),
        "engines": {
            "recognizer": getattr(services.recognizer, "name", None),
            "synthesizer": getattr(services.synthesizer, "name", None),
            "llm": services.settings.llm.name if services.settings.llm else None,
        },
        # What `ivr bench soak` watches for leaks across thousands of calls.
        "process": {"event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                    "tasks": len(asyncio.all_tasks()), "threads": threading.active_count(),
                    "fds": _open_fds(), "heap_trims": services.heap_trims,
                    "heap_trim_pending": services.heap_trimmed_through is not None
                    and services.heap_trimmed_through != services.counters["calls_started"]},
    }
    if services.speech_cache is not None:
        cache = services.speech_cache.cache
        body["speech_cache"] = {**dataclasses.asdict(cache.stats),
                                "hit_rate": round(cache.hit_rate, 4)}
    return web.json_response(body)
