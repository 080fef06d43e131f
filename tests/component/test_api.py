"""/api and /dashboard: who may read them (local client, bearer, the dashboard's sign-in
and session cookie), call list and detail, stats, bookings."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler, Middleware

from ivr.analytics.report import build_report
from ivr.server.access import SESSION_TTL_S, SessionSigner
from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.store.db import CallStore, TurnRecord
from ivr.tools.seed import seed
from tests.conftest import make_settings

# The seeded calls' cost, split by provider: each still totals $0.0125, so the figures
# below (3 x $0.0125) hold; call 1 also used a model with no rate.
SEED_COSTS = {"telephony": 0.01, "stt:openai:whisper-1": 0.0012, "tts:openai:tts-1": 0.0009,
              "llm:gpt-4o-mini": 0.0004}
SEED_UNPRICED = "some-model"
# Turn 2 of call 0 ran on remote engines: recognition, two LLM rounds around a tool call,
# synthesis; ms since the stream started.
REMOTE_SPANS: list[dict[str, Any]] = [
    {"stage": "tts", "provider": "openai:tts-1", "start": 5770.0, "first": 6010.0,
     "end": 6400.0},
    {"stage": "stt", "provider": "openai:whisper-1", "start": 4800.0, "end": 5150.0},
    {"stage": "llm", "provider": "gpt-4o-mini", "start": 5160.0, "first": 5420.0,
     "end": 5500.0},
    {"stage": "tool", "provider": "bookings.check_availability", "start": 5500.0,
     "end": 5560.0},
    {"stage": "llm", "provider": "gpt-4o-mini", "start": 5565.0, "first": 5700.0,
     "end": 5760.0},
]


def seed_hour() -> datetime:
    """The UTC hour the last seeded call starts in: the one before the current hour, so
    that call (2 minutes in) has started by now and the last 24 h hold all three."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


async def _seeded(
    tmp_path: Path, db: Path | str | None = None, *, hour: datetime | None = None,
) -> Path | str:
    db = db if db is not None else tmp_path / "ivr.db"
    hour = hour or seed_hour()
    await seed(db)
    store = await CallStore.open(db)
    for i, outcome in enumerate(["completed", "abandoned", "completed"]):
        sid = f"CA{i:032d}"
        started = hour - timedelta(hours=2 - i) + timedelta(minutes=i)
        await store.start_call(sid, stream_sid=f"MZ{i:032d}", account_sid=None,
                               from_masked="+1555***0001", to_masked="", flow="demo",
                               started_at=started.isoformat(timespec="milliseconds"))
        await store.add_turn(sid, TurnRecord(seq=1, step="menu", prompt="Say sales.",
                                       input_kind="speech", result="match",
                                       timings={"speech_start": 100.0, "endpoint": 900.0,
                                                "recognized": 950.0,
                                                "reply_first_frame": 1000.0,
                                                "response_ms": 100.0 + i}))
        if i == 0:
            await store.add_turn(sid, TurnRecord(
                seq=2, step="agent", prompt="What day suits you?", input_kind="speech",
                input_text="is tuesday free", result="match",
                timings={"speech_start": 4000.0, "endpoint": 4800.0, "recognized": 5150.0,
                         "reply_first_frame": 6050.0, "response_ms": 1250.0},
                spans=REMOTE_SPANS))
        cost: dict[str, float] = {**SEED_COSTS, "total": 0.0125}
        if i == 1:
            cost[f"unpriced:{SEED_UNPRICED}"] = 0.0
        await store.end_call(sid, outcome=outcome,
                             stats={"cost": cost, "last_step": "menu", "duration_ms": 10000})
    await store.close()
    return db


async def _client(
    tmp_path: Path, *, hour: datetime | None = None, **settings: Any,
) -> TestClient:  # type: ignore[type-arg]
    settings["db"] = await _seeded(tmp_path, settings.get("db"), hour=hour)
    client = TestClient(TestServer(create_app(make_settings(tmp_path, recognizer_workers=1,
                                                            **settings)), host="127.0.0.1"))
    await client.start_server()
    return client


async def test_token_is_required_when_set(tmp_path: Path) -> None:
    client = await _client(tmp_path, api_token="t0ken")
    try:
        assert (await client.get("/api/calls")).status == 401
        bad = await client.get("/api/calls", headers={"Authorization": "Bearer nope"})
        assert bad.status == 401
        ok = await client.get("/api/calls", headers={"Authorization": "Bearer t0ken"})
        assert ok.status == 200
        assert ok.headers["Cache-Control"] == "no-store"
    finally:
        await client.close()


async def test_a_token_in_the_url_is_not_accepted(tmp_path: Path) -> None:
    """`?token=` would land in proxy logs and browser history: it opens nothing."""
    client = await _client(tmp_path, api_token="t0ken")
    try:
        assert (await client.get("/api/calls?token=t0ken")).status == 401
        assert (await client.get("/dashboard?token=t0ken")).status == 401
        assert 'type="password"' in await (await client.get("/dashboard?token=t0ken")).text()
    finally:
        await client.close()


EVIL = {"Host": "evil.example"}


@pytest.mark.parametrize("path", ["/api/calls", "/api/stats", "/api/bookings", "/api/costs",
                                  f"/api/calls/CA{0:032d}", f"/api/calls/CA{0:032d}/prompts",
                                  "/dashboard", "/metrics"])
async def test_without_a_token_a_foreign_host_is_refused(tmp_path: Path, path: str) -> None:
    """A loopback peer naming another host (DNS rebinding) gets 401; with 127.0.0.1, 200."""
    client = await _client(tmp_path)
    try:
        refused = await client.get(path, headers=EVIL)
        assert refused.status == 401
        assert "IVR_API_TOKEN" in await refused.text()
        assert (await client.get(path)).status == 200
    finally:
        await client.close()


async def test_every_api_route_is_guarded(tmp_path: Path) -> None:
    """The guard goes by the route that matched: no /api route answers a foreign host."""
    client = await _client(tmp_path)
    try:
        routes = [r.canonical for r in client.server.app.router.resources()
                  if r.canonical.startswith("/api/")]
        assert len(routes) >= 4
        for route in routes:
            path = re.sub(r"\{[^}]+\}", "CA" + "0" * 32, route)
            assert (await client.get(path, headers=EVIL)).status == 401, route
    finally:
        await client.close()


def _peer(address: str) -> Middleware:
    @web.middleware
    async def peer(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(remote=address))

    return peer


async def test_without_a_token_a_remote_peer_is_refused(tmp_path: Path) -> None:
    """A peer that is not loopback is refused, whatever Host or forwarded header it sends."""
    await _seeded(tmp_path)
    app = create_app(make_settings(tmp_path, recognizer_workers=1))
    app.middlewares.insert(0, _peer("203.0.113.7"))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"}):
            for path in ("/api/stats", "/dashboard", "/metrics"):
                assert (await client.get(path, headers=headers)).status == 401, (path, headers)
        assert await (await client.get("/healthz")).json() == {"ok": True}
    finally:
        await client.close()


async def test_a_proxied_loopback_request_is_not_local(tmp_path: Path) -> None:
    """A proxy on this machine forwards the internet from 127.0.0.1: its headers say so."""
    client = await _client(tmp_path)
    try:
        proxied = {"X-Forwarded-For": "198.51.100.4"}
        assert (await client.get("/api/stats", headers=proxied)).status == 401
    finally:
        await client.close()


def _session_cookie(resp: ClientResponse) -> Morsel[str]:
    cookies = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie"):
        cookies.load(header)
    return cookies["ivr_session"]


async def test_the_dashboard_signs_in_once_and_keeps_a_cookie(tmp_path: Path) -> None:
    """The form posts the token; the cookie it sets opens the page and /api, never a URL."""
    client = await _client(tmp_path, api_token="t0ken")
    try:
        form_page = await client.get("/dashboard")
        assert form_page.status == 401
        html = await form_page.text()
        assert '<form method="post"' in html and 'name="token"' in html
        assert "frame-ancestors 'none'" in form_page.headers["Content-Security-Policy"]
        signed = await client.post("/dashboard", data={"token": "t0ken"},
                                   allow_redirects=False)
        assert signed.status == 303 and signed.headers["Location"] == "dashboard"
        morsel = _session_cookie(signed)
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
        assert not morsel["secure"]  # served over http here
        assert "t0ken" not in morsel.value
        client.session.cookie_jar.clear()
        cookie = {"Cookie": f"ivr_session={morsel.value}"}
        page = await client.get("/dashboard", headers=cookie)
        assert page.status == 200 and "Recent calls" in await page.text()
        assert page.headers["Cache-Control"] == "no-store"
        assert (await client.get("/api/stats", headers=cookie)).status == 200
        assert (await client.get("/metrics", headers=cookie)).status == 200
        # With a token, the token (here its cookie) is the rule, not the Host.
        assert (await client.get("/api/stats", headers={**cookie, **EVIL})).status == 200
        out = await client.post("/dashboard/sign-out", headers=cookie, allow_redirects=False)
        assert out.status == 303 and _session_cookie(out).value == ""
    finally:
        await client.close()


async def test_a_wrong_token_at_sign_in_sets_no_cookie_and_is_counted(tmp_path: Path) -> None:
    client = await _client(tmp_path, api_token="t0ken")
    try:
        wrong = await client.post("/dashboard", data={"token": "guess"}, allow_redirects=False)
        assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
        assert "not the API token" in await wrong.text()
        assert client.server.app[SERVICES].counters["dashboard_sign_in_failed"] == 1
    finally:
        await client.close()


async def test_an_expired_or_forged_session_cookie_is_refused(tmp_path: Path) -> None:
    client = await _client(tmp_path, api_token="t0ken")
    try:
        expired = SessionSigner.for_token("t0ken").issue(time.time() - SESSION_TTL_S - 1)
        forged = SessionSigner.for_token("not-the-token").issue(time.time())
        for value in (expired, forged, "1.2.3"):
            cookie = {"Cookie": f"ivr_session={value}"}
            assert (await client.get("/api/stats", headers=cookie)).status == 401
            assert (await client.get("/dashboard", headers=cookie)).status == 401
    finally:
        await client.close()


async def test_the_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    client = await _client(tmp_path, api_token="t0ken", public_url="https://ivr.example.com")
    try:
        signed = await client.post("/dashboard", data={"token": "t0ken"},
                                   allow_redirects=False)
        assert _session_cookie(signed)["secure"]
    finally:
        await client.close()


async def test_without_a_token_there_is_no_sign_in(tmp_path: Path) -> None:
    client = await _client(tmp_path)
    try:
        assert (await client.post("/dashboard", data={"token": ""})).status == 404
    finally:
        await client.close()


async def test_calls_detail_stats_and_bookings(tmp_path: Path, db_target: Path | str) -> None:
    # Loopback without a token: open (with a warning).
    client = await _client(tmp_path, db=db_target)
    try:
        listing = await (await client.get("/api/calls?limit=2&outcome=completed")).json()
        assert len(listing["calls"]) == 2
        assert {c["outcome"] for c in listing["calls"]} == {"completed"}
        assert listing["calls"][0]["cost"] == 0.0125
        sid = listing["calls"][0]["call_sid"]
        detail = await (await client.get(f"/api/calls/{sid}")).json()
        assert detail["turns"][0]["prompt"] == "Say sales."
        assert detail["waterfall"][0]["points"]["endpoint"] == 900.0
        assert detail["costs"]["total"] == 0.0125
        assert (await client.get("/api/calls/CAnope")).status == 404
        # An ended call's prompts come from its stored turns (a live call's carry marks).
        said = await (await client.get(f"/api/calls/{sid}/prompts")).json()
        assert said["live"] is False
        assert said["prompts"][0] == {"mark": None, "text": "Say sales.", "state": "played"}
        assert (await client.get("/api/calls/CAnope/prompts")).status == 404
        stats = await (await client.get("/api/stats")).json()
        assert stats == await build_report(db_target)
        # Figures computed here from what was seeded: 3 calls, 2 completed, 1 abandoned
        # at "menu", $0.0125 each, voice-to-voice 100/101/102 ms and 1250 ms for the
        # remote-engine turn (nearest-rank p50 of the four: 101).
        assert stats["calls"] == 3
        assert (stats["outcomes"]["completed"], stats["outcomes"]["abandoned"]) == (2, 1)
        assert stats["containment"]["rate"] == pytest.approx(2 / 3, abs=1e-3)
        assert stats["cost"]["total"] == pytest.approx(3 * 0.0125)
        assert stats["latency_ms"]["response_ms"]["p50"] == 101
        assert stats["drop_off"] == [{"step": "menu", "count": 1}]
        assert (await client.get("/api/calls?limit=x")).status == 400
        booked = await (await client.get("/api/bookings?status=booked")).json()
        assert booked["bookings"] and {b["status"] for b in booked["bookings"]} == {"booked"}
    finally:
        await client.close()


async def test_ivr_report_json_from_the_command_line(
    tmp_path: Path, db_target: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ivr report --db F --json` prints the same figures as /api/stats."""
    import json

    from ivr.cli.main import main

    db = await _seeded(tmp_path, db_target)
    with pytest.raises(SystemExit) as exit_:
        await asyncio.to_thread(main, ["report", "--db", str(db), "--json"])
    assert exit_.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calls"] == 3 and report["outcomes"]["completed"] == 2
    assert report["cost"]["total"] == pytest.approx(3 * 0.0125)


# Calls seeded at this hour start at 10:00, 11:01 and 12:02 UTC on 2026-03-10.
NOON = datetime(2026, 3, 10, 12, tzinfo=UTC)
PROVIDERS = sorted(SEED_COSTS)


async def _costs(client: TestClient, query: str) -> Any:  # type: ignore[type-arg]
    resp = await client.get("/api/costs?" + query)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_costs_are_summed_per_provider_in_hourly_buckets(
    tmp_path: Path, db_target: Path | str,
) -> None:
    """Every hour of the range is a bucket, the empty one with zeros; each call's cost
    lands in the hour it started, split by provider, without `total` or `unpriced:*`."""
    client = await _client(tmp_path, db=db_target, hour=NOON)
    try:
        body = await _costs(client, "since=2026-03-10T09:30&until=2026-03-10T13:00")
    finally:
        await client.close()
    zeros = dict.fromkeys(PROVIDERS, 0.0)
    seeded = {"calls": 1, "by_provider": SEED_COSTS, "total": 0.0125}
    assert body == {
        "since": "2026-03-10T09:30:00+00:00", "until": "2026-03-10T13:00:00+00:00",
        "bucket": "hour", "providers": PROVIDERS, "unpriced": [SEED_UNPRICED],
        "calls": 3, "total": 0.0375,
        "buckets": [
            {"start": "2026-03-10T09:00:00+00:00", "calls": 0, "by_provider": zeros,
             "total": 0.0},
            {"start": "2026-03-10T10:00:00+00:00", **seeded},
            {"start": "2026-03-10T11:00:00+00:00", **seeded},
            {"start": "2026-03-10T12:00:00+00:00", **seeded},
        ],
    }


async def test_costs_count_only_calls_started_in_the_range(
    tmp_path: Path, db_target: Path | str,
) -> None:
    """[since, until): a call starting at `until` is out; unpriced engines are those of
    the calls in range only."""
    client = await _client(tmp_path, db=db_target, hour=NOON)
    try:
        middle = await _costs(client, "since=2026-03-10T10:30&until=2026-03-10T12:02")
        last = await _costs(client, "since=2026-03-10T11:30&until=2026-03-10T12:02:00.001")
        zone = await _costs(client, "since=2026-03-10T12:30%2B01:00&until=2026-03-10T12:00")
    finally:
        await client.close()
    assert [(b["start"][11:16], b["calls"]) for b in middle["buckets"]] == [
        ("10:00", 0), ("11:00", 1), ("12:00", 0)]
    assert middle["unpriced"] == [SEED_UNPRICED] and middle["total"] == 0.0125
    assert last["calls"] == 1 and last["unpriced"] == []
    assert last["buckets"][-1]["by_provider"]["stt:openai:whisper-1"] == 0.0012
    # 12:30+01:00 is 11:30 UTC: the 11:01 call is before it.
    assert zone["since"] == "2026-03-10T11:30:00+00:00" and zone["calls"] == 0


async def test_costs_in_daily_buckets(tmp_path: Path, db_target: Path | str) -> None:
    client = await _client(tmp_path, db=db_target, hour=NOON)
    try:
        body = await _costs(client, "since=2026-03-08&until=2026-03-11&bucket=day")
    finally:
        await client.close()
    assert body["bucket"] == "day"
    assert [(b["start"], b["calls"], b["total"]) for b in body["buckets"]] == [
        ("2026-03-08T00:00:00+00:00", 0, 0.0), ("2026-03-09T00:00:00+00:00", 0, 0.0),
        ("2026-03-10T00:00:00+00:00", 3, 0.0375)]
    assert body["buckets"][2]["by_provider"] == {k: round(3 * v, 9)
                                                  for k, v in SEED_COSTS.items()}


async def test_costs_default_to_the_last_day_by_the_hour(tmp_path: Path) -> None:
    """No parameters: the last 24 h up to now, in consecutive hours ending at the current
    one; a range too long for hours is given in days unless hours were asked for."""
    client = await _client(tmp_path)
    try:
        before = datetime.now(UTC)
        body = await _costs(client, "")
        after = datetime.now(UTC)
        month = await _costs(client, "since=40d")
    finally:
        await client.close()
    starts = [datetime.fromisoformat(b["start"]) for b in body["buckets"]]
    assert body["bucket"] == "hour" and body["calls"] == 3
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(starts))
    assert before - timedelta(hours=1) < starts[-1] <= after
    assert 24 <= len(starts) <= 25
    assert month["bucket"] == "day" and month["calls"] == 3 and len(month["buckets"]) == 41


@pytest.mark.parametrize(("query", "says"), [
    ("bucket=week", "bucket must be hour or day"),
    ("since=yesterday", "since: expected e.g. 24h"),
    ("until=2026-13-01", "until: expected e.g. 24h"),
    ("since=2026-03-10&until=2026-03-09", "must be before until"),
    ("since=40d&bucket=hour", "ask for bucket=day"),
    ("since=1000d&bucket=day", "more than 744"),
])
async def test_costs_refuse_bad_parameters_with_a_reason(
    tmp_path: Path, query: str, says: str,
) -> None:
    client = await _client(tmp_path)
    try:
        resp = await client.get("/api/costs?" + query)
        assert resp.status == 400
        assert says in await resp.text()
    finally:
        await client.close()


async def test_a_bad_since_is_a_400_on_every_route(tmp_path: Path) -> None:
    """An unparsable ISO time is the caller's mistake, not a server error."""
    client = await _client(tmp_path)
    try:
        for path in ("/api/stats", "/api/calls", "/api/costs"):
            resp = await client.get(path + "?since=2026-02-30")
            assert resp.status == 400, path
            assert "since: expected" in await resp.text()
    finally:
        await client.close()


async def test_the_waterfall_carries_each_turns_provider_spans_in_start_order(
    tmp_path: Path, db_target: Path | str,
) -> None:
    client = await _client(tmp_path, db=db_target)
    try:
        detail = await (await client.get(f"/api/calls/CA{0:032d}")).json()
    finally:
        await client.close()
    first, remote = detail["waterfall"]
    assert first["spans"] == [] and first["points"]["endpoint"] == 900.0
    assert remote["points"]["reply_first_frame"] == 6050.0
    assert [(s["stage"], s["provider"]) for s in remote["spans"]] == [
        ("stt", "openai:whisper-1"), ("llm", "gpt-4o-mini"),
        ("tool", "bookings.check_availability"), ("llm", "gpt-4o-mini"),
        ("tts", "openai:tts-1")]
    llm, tts = remote["spans"][1], remote["spans"][4]
    assert (llm["start"], llm["first"], llm["end"]) == (5160.0, 5420.0, 5500.0)
    assert (tts["start"], tts["first"], tts["end"]) == (5770.0, 6010.0, 6400.0)
    assert "first" not in remote["spans"][0]


async def test_stats_projects_the_monthly_cost(tmp_path: Path) -> None:
    """?project_monthly=N gives `ivr report --project-monthly N`'s projection; a bad N is
    a 400 that says what is expected."""
    client = await _client(tmp_path)
    try:
        resp = await client.get("/api/stats?project_monthly=1000")
        assert resp.status == 200
        body = await resp.json()
        bad = await client.get("/api/stats?project_monthly=lots")
        assert bad.status == 400 and "calls a month" in await bad.text()
    finally:
        await client.close()
    p = body["projection"]
    assert p["calls_per_month"] == 1000 and p["observed_calls"] == 3
    assert p["total"] == pytest.approx(sum(p["by_provider"].values()), abs=0.011)
    assert p["total"] > 0 and p["dominant"] in p["by_provider"]
    assert body["cost"]["unpriced"] == ["some-model"]
