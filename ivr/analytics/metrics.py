"""Prometheus metrics: one `Metrics` per app, on its own registry, served at `/metrics`.

Each app owns a private `CollectorRegistry` (never the process-global one), so several
apps in one process — tests, `ivr bench` — never collide. The call session reports
through plain methods (`call_started`, `call_ended`, `turn`, `protocol_error`); provider
clients and the recognizer pool are sampled at scrape time by custom collectors
(`observe_providers`, `observe_recognizer`).

Several server processes (`ivr serve --processes N`, `server.supervisor`): the supervisor
sets `PROMETHEUS_MULTIPROC_DIR`, so counters, histograms and gauges live in files there
and any process's `/metrics` adds up every process's (prometheus-client multiprocess
mode): `ivr_calls_total` is the service's, `ivr_active_calls` the live processes' sum,
and `ivr_process_calls{pid=...}` says how many calls each process took. What is sampled
at scrape time (the recognizer pool, the providers, the loop lag) describes the process
that answered the scrape only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ivr.telephony.stream_token import REJECT_REASONS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STAGES = ("response", "recognition", "tool", "llm_first_token", "tts_first_byte", "stt")
# Voice-to-voice latencies of interest run from ~50 ms to ~10 s.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
BREAKER_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}
# Calls turned away (server/admission.py): where, and why. Fixed sets: bounded labels.
REFUSAL_DOORS = ("voice", "media")
REFUSAL_REASONS = ("cap", "lag", "draining")
# Provider `stats` keys exported as ivr_provider_requests_total{result=...}; each is
# monotonic on its own (a difference such as requests - failures would not be).
REQUEST_RESULTS: dict[str, str] = {"requests": "sent", "failures": "failed", "rejected": "rejected"}


# The wait of a provider request to start: ~0 below its limits, up to IVR_{ROLE}_QUEUE_MS
# (1 s by default; a full RPM window can make it longer when the queue time allows).
PROVIDER_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The wait for a free recognizer worker: ~0 with one free, up to IVR_RECOGNIZER_WAIT_MS.
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
# `stats` keys of the recognizer pool exported as ivr_recognizer_events_total{event=...}.
RECOGNIZER_EVENTS = ("respawns", "hold_cancels", "hold_kills", "wait_expired")


class BreakerLike(Protocol):
    @property
    def state(self) -> str: ...


class LimiterLike(Protocol):
    """What is sampled of a provider's limiter (`providers.limiter.AdaptiveLimiter`)."""

    @property
    def limit(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def rejected(self) -> int: ...


class ProviderLike(Protocol):
    """What `observe_providers` needs of a provider client (`providers.http.ProviderClient`)."""

    @property
    def name(self) -> str: ...
    @property
    def stats(self) -> Mapping[str, int]: ...
    @property
    def breaker(self) -> BreakerLike: ...
    @property
    def limiter(self) -> LimiterLike: ...


def _number(value: Any) -> float | None:
    """A finite, non-negative number, or None (missing, None, bad type, NaN, negative)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) and v >= 0 else None


class _ProviderCollector(Collector):
    """Samples the provider clients' own counters and breaker state on every scrape."""

    def __init__(self) -> None:
        self.clients: list[ProviderLike] = []

    def add(self, clients: Iterable[ProviderLike]) -> None:
        for client in clients:
            if not any(c is client for c in self.clients):
                self.clients.append(client)

    def describe(self) -> Iterable[Metric]:
        # Declared up front so the registry checks the names for clashes at registration.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ivr_provider_requests", "Provider requests by result (sent, failed, rejected)",
            labels=["provider", "result"],
        )
        retries = CounterMetricFamily(
            "ivr_provider_retries", "Provider request retries", labels=["provider"]
        )
        breaker = GaugeMetricFamily(
            "ivr_provider_breaker_state",
            "Provider circuit breaker: 0 closed, 1 half-open, 2 open", labels=["provider"],
        )
        gauges = {
            "limit": GaugeMetricFamily(
                "ivr_provider_concurrency_limit",
                "Provider requests allowed in flight now (AIMD: halved on a 429, +1 per 20 "
                "successes, at most IVR_{ROLE}_CONCURRENCY)", labels=["provider"]),
            "in_flight": GaugeMetricFamily(
                "ivr_provider_in_flight", "Provider requests in flight", labels=["provider"]),
            "queued": GaugeMetricFamily(
                "ivr_provider_queued", "Provider requests waiting for a slot under the limits",
                labels=["provider"]),
        }
        rejected = CounterMetricFamily(
            "ivr_provider_queue_rejections",
            "Provider requests refused before sending: no slot within IVR_{ROLE}_QUEUE_MS "
            "(served by the embedded engine)", labels=["provider"],
        )
        # Clients sharing a name are summed (counters, limits) or take the worst state
        # (breaker).
        by_name: dict[str, tuple[dict[str, float], float, int]] = {}
        limits: dict[str, dict[str, float]] = {}
        for client in self.clients:
            results, retried, state = by_name.get(client.name, ({}, 0.0, 0))
            for key, result in REQUEST_RESULTS.items():
                results[result] = results.get(result, 0.0) + client.stats.get(key, 0)
            retried += client.stats.get("retries", 0)
            state = max(state, BREAKER_STATES.get(client.breaker.state, 0))
            by_name[client.name] = (results, retried, state)
            sampled = limits.setdefault(client.name, {})
            for key in (*gauges, "rejected"):
                sampled[key] = sampled.get(key, 0.0) + getattr(client.limiter, key)
        for name, (results, retried, state) in sorted(by_name.items()):
            for result, value in results.items():
                requests.add_metric([name, result], value)
            retries.add_metric([name], retried)
            breaker.add_metric([name], state)
            for key, family in gauges.items():
                family.add_metric([name], limits[name][key])
            rejected.add_metric([name], limits[name]["rejected"])
        yield requests
        yield retries
        yield breaker
        yield from gauges.values()
        yield rejected


class RecognizerPoolLike(Protocol):
    """What `observe_recognizer` needs of the pool (`speech.sphinx.pool.RecognizerPool`)."""

    @property
    def busy_workers(self) -> int: ...
    @property
    def busy_slots(self) -> int: ...
    @property
    def worker_pids(self) -> list[int]: ...
    @property
    def queued(self) -> int: ...
    @property
    def stats(self) -> Mapping[str, int]: ...


class _RecognizerCollector(Collector):
    """Samples the recognizer pool's workers, queue and events on every scrape."""

    def __init__(self) -> None:
        self.pool: RecognizerPoolLike | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.pool)

    def _families(self, pool: RecognizerPoolLike | None) -> Iterator[Metric]:
        busy = GaugeMetricFamily(
            "ivr_recognizer_busy_workers", "Recognizer workers holding an utterance"
        )
        slots = GaugeMetricFamily(
            "ivr_recognizer_busy_slots",
            "Utterances recognizer workers are decoding (IVR_RECOGNIZER_SLOTS per worker)")
        workers = GaugeMetricFamily("ivr_recognizer_workers", "Recognizer workers alive")
        queued = GaugeMetricFamily(
            "ivr_recognizer_queued", "Utterances waiting for a free recognizer worker"
        )
        events = CounterMetricFamily(
            "ivr_recognizer_events",
            "Recognizer pool events: respawns (a worker exited), hold_cancels (an utterance "
            "held too long, cancelled in its worker), hold_kills (a worker killed for not "
            "acknowledging that cancel), wait_expired (no worker slot free in time)",
            labels=["event"],
        )
        if pool is not None:
            busy.add_metric([], pool.busy_workers)
            slots.add_metric([], pool.busy_slots)
            workers.add_metric([], len(pool.worker_pids))
            queued.add_metric([], pool.queued)
            for event in RECOGNIZER_EVENTS:
                events.add_metric([event], pool.stats.get(event, 0))
        yield busy
        yield slots
        yield workers
        yield queued
        yield events


class Metrics:
    """The app's metrics on a private registry; `registry` is what `/metrics` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Multiprocess mode: the values live in files every process's scrape adds up;
        # what is sampled in this process alone goes on a registry of its own.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._sampled = CollectorRegistry(auto_describe=True) if self.multiprocess_dir else r
        self.active_calls = Gauge("ivr_active_calls", "Calls in progress", registry=r,
                                  multiprocess_mode="livesum")
        self.process_calls = Gauge(
            "ivr_process_calls", "Calls this server process has started (several "
            "processes: one series per pid)", registry=r, multiprocess_mode="all")
        self.calls = Counter("ivr_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.turn_latency = Histogram(
            "ivr_turn_latency_seconds",
            "Turn latency by stage: response (voice to voice), recognition, tool, "
            "llm_first_token, tts_first_byte, stt (request to result)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        for stage in STAGES:
            self.turn_latency.labels(stage=stage)
        self.protocol_errors = Counter(
            "ivr_protocol_errors", "Bad Media Streams frames, by reason", ["reason"], registry=r
        )
        self.starts_rejected = Counter(
            "ivr_start_rejected", "Stream starts refused (no valid stream token), by reason",
            ["reason"], registry=r,
        )
        for reason in REJECT_REASONS:
            self.starts_rejected.labels(reason=reason)
        self.late_frames = Counter(
            "ivr_late_frames", "Outbound audio frames sent after their deadline", registry=r
        )
        self.cost = Counter(
            "ivr_cost_usd", "Provider cost in US dollars", ["provider"], registry=r
        )
        self.fillers = Counter("ivr_fillers", "'One moment, please' fillers played", registry=r)
        self.refused = Counter(
            "ivr_calls_refused", "New calls turned away, by door (voice: busy TwiML, media: "
            "503 before the upgrade) and reason (cap, lag, draining)",
            ["door", "reason"], registry=r,
        )
        for door in REFUSAL_DOORS:
            for why in REFUSAL_REASONS:
                self.refused.labels(door=door, reason=why)
        self.loop_lag = Gauge(
            "ivr_event_loop_lag_p99_seconds",
            "How late the event loop wakes a 20 ms probe: p99 over the last 5 s",
            registry=self._sampled,
        )
        self.recognizer_wait = Histogram(
            "ivr_recognizer_wait_seconds",
            "Wait of an utterance for a free recognizer worker (given up at "
            "IVR_RECOGNIZER_WAIT_MS)", buckets=WAIT_BUCKETS, registry=r,
        )
        self.provider_wait = Histogram(
            "ivr_provider_queue_wait_seconds",
            "Wait of a provider request (each attempt) for a slot under the provider's "
            "limits", ["provider"], buckets=PROVIDER_WAIT_BUCKETS, registry=r,
        )
        self._providers = _ProviderCollector()
        self._sampled.register(self._providers)
        self._recognizer = _RecognizerCollector()
        self._sampled.register(self._recognizer)

    # -- what the call session calls ---------------------------------------------------

    def call_started(self) -> None:
        self.active_calls.inc()
        self.process_calls.inc()

    def call_ended(self, outcome: str, stats: Mapping[str, Any]) -> None:
        """A call is over: `stats` as the session records it (late_frames, fillers, and
        `cost`, a dict provider -> USD whose "total" key is skipped)."""
        self.active_calls.dec()
        self.calls.labels(outcome=outcome).inc()
        late = _number(stats.get("late_frames"))
        if late:
            self.late_frames.inc(late)
        fillers = _number(stats.get("fillers"))
        if fillers:
            self.fillers.inc(fillers)
        cost = stats.get("cost") or {}
        if isinstance(cost, Mapping):
            for provider, usd in cost.items():
                amount = _number(usd)
                if provider != "total" and amount is not None:
                    self.cost.labels(provider=str(provider)).inc(amount)

    def turn(self, timings: Mapping[str, Any]) -> None:
        """One turn's timings (ms): `response_ms` as stage response, `recognized - endpoint`
        as recognition, and the provider stages `tool_ms`, `llm_first_token_ms`,
        `tts_first_byte_ms`, `stt_ms` when present."""
        response = _number(timings.get("response_ms"))
        if response is not None:
            self.observe("response", response / 1000)
        endpoint, recognized = _number(timings.get("endpoint")), _number(timings.get("recognized"))
        if endpoint is not None and recognized is not None and recognized >= endpoint:
            self.observe("recognition", (recognized - endpoint) / 1000)
        for stage in STAGES[2:]:
            ms = _number(timings.get(f"{stage}_ms"))
            if ms is not None:
                self.observe(stage, ms / 1000)

    def observe(self, stage: str, seconds: float) -> None:
        self.turn_latency.labels(stage=stage).observe(seconds)

    def protocol_error(self, reason: str) -> None:
        self.protocol_errors.labels(reason=reason).inc()

    def start_rejected(self, reason: str) -> None:
        self.starts_rejected.labels(reason=reason).inc()

    def call_refused(self, door: str, reason: str) -> None:
        if door in REFUSAL_DOORS and reason in REFUSAL_REASONS:
            self.refused.labels(door=door, reason=reason).inc()

    def observe_loop_lag(self, p99_ms: Callable[[], float]) -> None:
        """Sample the loop-lag probe (`p99_ms()`, in ms) at scrape time."""
        self.loop_lag.set_function(lambda: p99_ms() / 1000)

    def observe_providers(self, clients: Iterable[ProviderLike]) -> None:
        """Sample these provider clients (`.name`, `.stats`, `.breaker.state`, `.limiter`)
        at scrape time."""
        self._providers.add(clients)

    def provider_waited(self, provider: str, seconds: float) -> None:
        """A provider request's attempt started after waiting `seconds` for a slot."""
        self.provider_wait.labels(provider=provider).observe(seconds)

    def observe_recognizer(self, pool: RecognizerPoolLike) -> None:
        """Sample this pool's busy workers, workers, queue and events at scrape time."""
        self._recognizer.pool = pool

    def recognizer_waited(self, seconds: float) -> None:
        self.recognizer_wait.observe(seconds)

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged) + generate_latest(self._sampled)


METRICS = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics`: the Prometheus text exposition of the app's `Metrics`.

    Who may scrape is decided before this runs (`server.access.guard`): whoever may read
    `/api`, or a bearer of `IVR_METRICS_TOKEN`."""
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
