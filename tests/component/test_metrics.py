"""Prometheus metrics: exposition format, values, independent registries, the handler,
and who may scrape it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from ivr.analytics.metrics import METRICS, Metrics, metrics_handler
from ivr.server.app import create_app
from tests.conftest import make_settings


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.exposition().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    return samples(m).get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class FakeBreaker:
    state: str = "closed"


@dataclass
class FakeLimiter:
    limit: int = 8
    in_flight: int = 0
    queued: int = 0
    rejected: int = 0


@dataclass
class FakeProvider:
    name: str
    stats: Counter[str] = field(default_factory=Counter)
    breaker: FakeBreaker = field(default_factory=FakeBreaker)
    limiter: FakeLimiter = field(default_factory=FakeLimiter)


def test_exposition_parses_and_has_every_family() -> None:
    m = Metrics()
    names = {f.name for f in text_string_to_metric_families(m.exposition().decode())}
    assert {
        "ivr_active_calls", "ivr_calls", "ivr_turn_latency_seconds", "ivr_protocol_errors",
        "ivr_late_frames", "ivr_cost_usd", "ivr_fillers", "ivr_provider_requests",
        "ivr_provider_retries", "ivr_provider_breaker_state", "ivr_provider_queue_wait_seconds",
    } <= names
    # Every stage is exported from the start, at zero.
    for stage in ("response", "recognition", "tool", "llm_first_token"):
        assert value(m, "ivr_turn_latency_seconds_count", stage=stage) == 0


def test_call_lifecycle_moves_values() -> None:
    m = Metrics()
    m.call_started()
    m.call_started()
    assert value(m, "ivr_active_calls") == 2
    m.call_ended("completed", {
        "late_frames": 3, "fillers": 2, "cost": {"stt": 0.01, "llm": 0.25, "total": 0.26},
    })
    assert value(m, "ivr_active_calls") == 1
    assert value(m, "ivr_calls_total", outcome="completed") == 1
    assert value(m, "ivr_late_frames_total") == 3
    assert value(m, "ivr_fillers_total") == 2
    assert value(m, "ivr_cost_usd_total", provider="llm") == 0.25
    assert value(m, "ivr_cost_usd_total", provider="stt") == 0.01
    assert ("ivr_cost_usd_total", (("provider", "total"),)) not in samples(m)
    m.call_ended("abandoned", {})  # no late frames, fillers or cost: nothing breaks
    assert value(m, "ivr_active_calls") == 0
    assert value(m, "ivr_calls_total", outcome="abandoned") == 1
    assert value(m, "ivr_late_frames_total") == 3


def test_turn_timings() -> None:
    m = Metrics()
    m.turn({"response_ms": 700, "endpoint": 1000, "recognized": 1300})
    m.turn({"response_ms": 4000, "endpoint": 5000})  # no recognition result
    m.turn({"response_ms": None, "tool_ms": 250, "llm_first_token_ms": 600})
    assert value(m, "ivr_turn_latency_seconds_count", stage="response") == 2
    assert value(m, "ivr_turn_latency_seconds_sum", stage="response") == 4.7
    assert value(m, "ivr_turn_latency_seconds_bucket", stage="response", le="0.75") == 1
    assert value(m, "ivr_turn_latency_seconds_count", stage="recognition") == 1
    assert abs(value(m, "ivr_turn_latency_seconds_sum", stage="recognition") - 0.3) < 1e-9
    assert value(m, "ivr_turn_latency_seconds_count", stage="tool") == 1
    assert value(m, "ivr_turn_latency_seconds_count", stage="llm_first_token") == 1


def test_protocol_errors() -> None:
    m = Metrics()
    m.protocol_error("bad_json")
    m.protocol_error("bad_json")
    m.protocol_error("unknown_event")
    assert value(m, "ivr_protocol_errors_total", reason="bad_json") == 2
    assert value(m, "ivr_protocol_errors_total", reason="unknown_event") == 1


def test_providers_sampled_at_scrape_time() -> None:
    m = Metrics()
    stt = FakeProvider("stt")
    m.observe_providers([stt])
    m.observe_providers([stt])  # observing twice does not double count
    assert value(m, "ivr_provider_requests_total", provider="stt", result="sent") == 0
    stt.stats.update(requests=5, retries=2, failures=1, rejected=4)
    stt.breaker.state = "open"
    assert value(m, "ivr_provider_requests_total", provider="stt", result="sent") == 5
    assert value(m, "ivr_provider_requests_total", provider="stt", result="failed") == 1
    assert value(m, "ivr_provider_requests_total", provider="stt", result="rejected") == 4
    assert value(m, "ivr_provider_retries_total", provider="stt") == 2
    assert value(m, "ivr_provider_breaker_state", provider="stt") == 2
    stt.breaker.state = "half_open"
    assert value(m, "ivr_provider_breaker_state", provider="stt") == 1


def test_provider_limits_sampled_at_scrape_time_and_waits_observed() -> None:
    """The adaptive limit, what is in flight and queued, refusals, and the queue wait."""
    m = Metrics()
    llm = FakeProvider("llm")
    m.observe_providers([llm])
    assert value(m, "ivr_provider_concurrency_limit", provider="llm") == 8
    llm.limiter = FakeLimiter(limit=2, in_flight=2, queued=3, rejected=5)
    assert value(m, "ivr_provider_concurrency_limit", provider="llm") == 2
    assert value(m, "ivr_provider_in_flight", provider="llm") == 2
    assert value(m, "ivr_provider_queued", provider="llm") == 3
    assert value(m, "ivr_provider_queue_rejections_total", provider="llm") == 5
    m.provider_waited("llm", 0.0)
    m.provider_waited("llm", 0.3)
    assert value(m, "ivr_provider_queue_wait_seconds_count", provider="llm") == 2
    assert value(m, "ivr_provider_queue_wait_seconds_bucket", provider="llm", le="0.001") == 1
    assert value(m, "ivr_provider_queue_wait_seconds_sum", provider="llm") == 0.3


@dataclass
class FakePool:
    busy_workers: int = 0
    busy_slots: int = 0
    worker_pids: list[int] = field(default_factory=lambda: [101, 102])
    queued: int = 0
    stats: Counter[str] = field(default_factory=Counter)


def test_recognizer_pool_sampled_at_scrape_time() -> None:
    """Busy workers, workers, the queue and pool events at scrape time; waits as a
    histogram."""
    m = Metrics()
    assert value(m, "ivr_recognizer_busy_workers") == 0  # no pool yet
    pool = FakePool()
    m.observe_recognizer(pool)
    pool.busy_workers, pool.busy_slots, pool.queued = 2, 5, 3
    pool.stats.update(respawns=1, hold_kills=1, wait_expired=4)
    assert value(m, "ivr_recognizer_busy_workers") == 2
    assert value(m, "ivr_recognizer_busy_slots") == 5
    assert value(m, "ivr_recognizer_workers") == 2
    assert value(m, "ivr_recognizer_queued") == 3
    assert value(m, "ivr_recognizer_events_total", event="respawns") == 1
    assert value(m, "ivr_recognizer_events_total", event="hold_kills") == 1
    assert value(m, "ivr_recognizer_events_total", event="wait_expired") == 4
    m.recognizer_waited(0.004)
    m.recognizer_waited(4.0)
    assert value(m, "ivr_recognizer_wait_seconds_count") == 2
    assert value(m, "ivr_recognizer_wait_seconds_bucket", le="0.01") == 1


def test_two_instances_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.call_started()
    a.protocol_error("bad_json")
    a.observe_providers([FakeProvider("llm", Counter(requests=3))])
    assert value(a, "ivr_active_calls") == 1
    assert value(b, "ivr_active_calls") == 0
    assert value(b, "ivr_protocol_errors_total", reason="bad_json") == 0
    assert value(b, "ivr_provider_requests_total", provider="llm", result="sent") == 0
    assert value(a, "ivr_provider_requests_total", provider="llm", result="sent") == 3


async def test_handler(aiohttp_client: AiohttpClient) -> None:
    app = web.Application()
    app[METRICS] = Metrics()
    app.router.add_get("/metrics", metrics_handler)
    client = await aiohttp_client(app)
    app[METRICS].call_started()
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    assert families["ivr_active_calls"].samples[0].value == 1


@pytest.mark.parametrize("api_token", ["", "api-t0ken"])
async def test_the_metrics_token_opens_metrics_and_nothing_else(
    tmp_path: Path, api_token: str
) -> None:
    """IVR_METRICS_TOKEN is a bearer for /metrics (and /healthz detail), not for /api."""
    app = create_app(make_settings(tmp_path, recognizer_workers=1, metrics_token="scrape-me",
                                   api_token=api_token))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    foreign = {"Host": "prometheus.example"}
    scraper = {**foreign, "Authorization": "Bearer scrape-me"}
    try:
        assert (await client.get("/metrics", headers=foreign)).status == 401
        assert (await client.get("/metrics", headers=scraper)).status == 200
        assert (await client.get("/api/stats", headers=scraper)).status == 401
        assert "counters" in await (await client.get("/healthz", headers=scraper)).json()
        if api_token:
            operator = {**foreign, "Authorization": f"Bearer {api_token}"}
            assert (await client.get("/metrics", headers=operator)).status == 200
            # With an API token, the local shortcut is gone: the token is the rule.
            assert (await client.get("/metrics")).status == 401
        else:
            assert (await client.get("/metrics")).status == 200  # a local client
    finally:
        await client.close()
