"""`/api/*`: calls, one call's detail and the prompts a live call has played so far,
stats, cost over time and bookings, as JSON for operators.

Who may ask is decided before any handler here runs, by `server.access.guard` on every
`/api/` route: with `IVR_API_TOKEN` its bearer (or the dashboard's session cookie),
without it only a client on this machine.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from ivr.analytics.cost_series import choose_bucket, cost_series
from ivr.analytics.report import build_report, parse_since
from ivr.errors import ConfigError, InvalidValue
from ivr.server.services import SERVICES, Services

log = structlog.get_logger("ivr.api")

MAX_PAGE = 200
# /api/costs without ?since=: the last day (the dashboard's default range).
COSTS_SINCE = timedelta(hours=24)


def api_guard_warning(services: Services) -> None:
    s = services.settings
    if s.api_token:
        return
    detail = ("/api, /dashboard and /metrics answer only clients on this machine (loopback "
              "address and Host); set IVR_API_TOKEN to reach them from elsewhere")
    if s.public_url or s.trust_proxy:
        # A proxy on this machine that rewrites Host to 127.0.0.1 and adds no
        # X-Forwarded-* header (nginx's default) would pass the internet through as local.
        detail += "; behind a proxy, set IVR_API_TOKEN"
    log.warning("api_token_unset", detail=detail)


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise web.HTTPBadRequest(text=f"{name} must be a whole number\n")
    return min(int(raw), high)


def _moment(request: web.Request, name: str) -> datetime | None:
    """`?since=` / `?until=`: "7d", "12h" (ago) or an ISO time; a bad one is a 400."""
    raw = request.query.get(name)
    try:
        return parse_since(raw)
    except (ValueError, ConfigError):
        raise web.HTTPBadRequest(text=f"{name}: expected e.g. 24h, 7d or an ISO time "
                                      f"(2026-11-01T09:00, UTC without a zone), not {raw!r}\n",
                                 ) from None


async def calls(request: web.Request) -> web.Response:
    """Paged call list: ?limit=&offset=&flow=&outcome=&since= (newest first)."""
    services = request.app[SERVICES]
    limit, offset = _int(request, "limit", 50, MAX_PAGE), _int(request, "offset", 0, 10**9)
    where, params = ["1=1"], []
    for column in ("flow", "outcome"):
        if request.query.get(column):
            where.append(f"{column} = ?")
            params.append(request.query[column])
    since = _moment(request, "since")
    if since is not None:
        where.append("started_at >= ?")
        params.append(_stored_form(since))
    sql = (f"SELECT call_sid, stream_sid, flow, from_masked, to_masked, started_at, ended_at, "
           f"outcome, call_status, duration_s, stats FROM calls WHERE {' AND '.join(where)} "
           f"ORDER BY started_at DESC LIMIT ? OFFSET ?")
    assert services.store is not None
    rows = await services.store.db.fetch(sql, (*params, limit, offset))
    for row in rows:
        stats = json.loads(row.pop("stats") or "{}")
        row["cost"] = (stats.get("cost") or {}).get("total")
        row["last_step"] = stats.get("last_step")
    return web.json_response({"calls": rows, "limit": limit, "offset": offset})


async def call(request: web.Request) -> web.Response:
    """One call: record, transcript (turns with timings), costs, and a latency waterfall."""
    services = request.app[SERVICES]
    assert services.store is not None
    record = await services.store.get_call(request.match_info["call_sid"])
    if record is None:
        raise web.HTTPNotFound(text="no such call\n")
    record["costs"] = record["stats"].get("cost", {})
    record["waterfall"] = [_waterfall(t) for t in record["turns"]]
    return web.json_response(record)


async def prompts(request: web.Request) -> web.Response:
    """What the caller has been told so far: `{"live", "prompts": [{mark, text, state}]}`.

    A live call on this process answers from its speaker, marks (`prompt-N`) and all, so
    a client that hears a mark come back knows the words behind it; an ended call (or one
    on another process) answers from its stored turns, without marks.
    """
    services = request.app[SERVICES]
    sid = request.match_info["call_sid"]
    live = next((c for c in list(services.calls.values()) if c.call_sid == sid), None)
    if live is not None:
        return web.json_response({"call_sid": sid, "live": True,
                                  "prompts": live.prompts_played()})
    assert services.store is not None
    record = await services.store.get_call(sid)
    if record is None:
        raise web.HTTPNotFound(text="no such call\n")
    said = [{"mark": None, "text": t["prompt"], "state": "played"}
            for t in record["turns"] if t.get("prompt")]
    return web.json_response({"call_sid": sid, "live": False, "prompts": said})


def _waterfall(turn: dict[str, Any]) -> dict[str, Any]:
    """Stage points and provider spans of one turn on the server clock (ms since the
    stream started). Spans come in start order, so a chart draws them top to bottom as
    they happened (two LLM rounds around a tool call stay apart)."""
    t = turn["timings"]
    marks = ["prompt_first_frame", "speech_start", "endpoint", "digits_done", "recognized",
             "reply_first_frame"]
    points = {m: t[m] for m in marks if m in t}
    spans = [s for s in turn.get("spans") or [] if isinstance(s, dict)]
    spans.sort(key=lambda s: s["start"] if isinstance(s.get("start"), int | float) else 0.0)
    return {"seq": turn["seq"], "step": turn["step"], "points": points,
            "response_ms": t.get("response_ms"), "spans": spans}


async def stats(request: web.Request) -> web.Response:
    """The `ivr report` figures: ?since=&flow=&project_monthly=N."""
    services = request.app[SERVICES]
    since = _moment(request, "since")
    project = request.query.get("project_monthly")
    if project is not None and (not project.isdigit() or int(project) <= 0):
        raise web.HTTPBadRequest(
            text="project_monthly: a number of calls a month above 0, e.g. 100000\n")
    report = await build_report(services.settings.db, since=since,
                                flow=request.query.get("flow") or None,
                                project_monthly=int(project) if project else None,
                                pricing=services.pricing)
    return web.json_response(report)


async def costs(request: web.Request) -> web.Response:
    """Cost by provider over time (`analytics.cost_series`): calls started in
    [?since=, ?until=) (default: the last 24 h), in UTC `?bucket=hour|day` buckets."""
    services = request.app[SERVICES]
    until = _moment(request, "until") or datetime.now(UTC)
    since = _moment(request, "since") or until - COSTS_SINCE
    try:
        bucket = choose_bucket(since, until, request.query.get("bucket"))
    except InvalidValue as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    assert services.store is not None
    # Stored starts are UTC ISO strings with milliseconds: bounds in the same form
    # compare as text the same way as times, on SQLite and PostgreSQL alike.
    rows = await services.store.db.fetch(
        "SELECT started_at, stats FROM calls WHERE started_at >= ? AND started_at < ?",
        (_stored_form(since), _stored_form(until)),
    )
    return web.json_response(cost_series(rows, since=since, until=until, bucket=bucket))


def _stored_form(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


async def bookings(request: web.Request) -> web.Response:
    """Bookings, newest first: ?status=booked|cancelled&limit=&offset=."""
    services = request.app[SERVICES]
    limit, offset = _int(request, "limit", 50, MAX_PAGE), _int(request, "offset", 0, 10**9)
    status = request.query.get("status")
    sql = ("SELECT ref, service, day, start, name, status, created_at, call_sid FROM bookings "
           + ("WHERE status = ? " if status else "") + "ORDER BY day, start LIMIT ? OFFSET ?")
    params: tuple[Any, ...] = (status, limit, offset) if status else (limit, offset)
    assert services.store is not None
    rows = await services.store.db.fetch(sql, params)
    return web.json_response({"bookings": rows, "limit": limit, "offset": offset})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/calls", calls)
    app.router.add_get("/api/calls/{call_sid}", call)
    app.router.add_get("/api/calls/{call_sid}/prompts", prompts)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/costs", costs)
    app.router.add_get("/api/bookings", bookings)
