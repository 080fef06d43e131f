"""The aiohttp application factory.

Long-lived resources (the store, the recognizer worker pool, the synthesizer, the flows)
are created in `cleanup_ctx` generators: built before `yield`, torn down after, in
reverse order, after every live call has been ended and its record written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import structlog
from aiohttp import web

from ivr.analytics import api, dashboard
from ivr.analytics.metrics import METRICS, metrics_handler
from ivr.analytics.pricing import Pricing
from ivr.config import Settings, env_var, is_database_url
from ivr.errors import SpeechError, StoreError
from ivr.flows.library import FlowLibrary
from ivr.llm.client import ChatClient
from ivr.llm.realtime_wire import realtime_url
from ivr.providers.http import ProviderClient
from ivr.server import access, lifecycle
from ivr.server.admission import ADMISSION, Admission, lag_ctx
from ivr.server.memory import memory_ctx
from ivr.server.prewarm import prewarm_flows, start_prewarm
from ivr.server.services import SERVICES, Services
from ivr.speech.base import Recognizer, Synthesizer
from ivr.speech.cache import CachedSynthesis, SynthesisCache
from ivr.speech.espeak import EspeakSynthesizer
from ivr.speech.fallback import FallbackRecognizer, FallbackSynthesizer, serving_names
from ivr.speech.openai_audio_chat import AudioChatRecognizer
from ivr.speech.openai_stt import OpenAIRecognizer
from ivr.speech.openai_tts import OpenAISynthesizer
from ivr.speech.realtime_stt import RealtimeRecognizer
from ivr.speech.sphinx.pool import RecognizerPool
from ivr.store.db import CallStore
from ivr.store.queue import RETRYABLE, spill_path
from ivr.telephony import handler, twiml
from ivr.tools.base import Tool
from ivr.tools.registry import default_registry
from ivr.tools.seed import seed_new
from ivr.tools.webhooks import load_webhooks, webhook_tools

log = structlog.get_logger("ivr.server.app")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    s = services.settings
    services.store = await CallStore.open(
        s.db, redact_digits=s.redact_digits, instance_id=s.instance_id or _instance_id(),
        queue_max=s.db_queue_max, spill=spill_path(s.db, s.speech_cache_dir))
    # A stream token is spent once across every process on this database.
    services.stream_tokens.marks = services.store
    await _demo_seed(services.store, s)  # before any call is admitted
    yield
    await services.store.close()  # queued writes land or spill first


async def _demo_seed(store: CallStore, s: Settings) -> None:
    """A new SQLite database gets the demo business, so `ivr serve` books a cleaning out of
    the box; a PostgreSQL store is shared and operator-run, never seeded implicitly."""
    if not s.demo_seed:
        return
    try:
        if is_database_url(s.db):
            if await store.db.fetchone("SELECT 1 FROM services LIMIT 1") is None:
                log.info("demo_not_seeded", reason="a PostgreSQL store is never seeded "
                         "implicitly", hint="ivr db seed --db URL inserts the demo business")
            return
        counts = await seed_new(store.db)
    except StoreError as exc:  # the calls that need no services still work
        log.warning("demo_seed_failed", error=str(exc))
        return
    if counts is not None:
        log.info("demo_seeded", db=str(s.db), **counts,
                 hint=f"a new database gets the demo business; {env_var('demo_seed')}=0 "
                      "turns this off")


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def _liveness_ctx(app: web.Application) -> AsyncIterator[None]:
    """Before the first call, close the calls of processes that died (no outcome, a
    heartbeat older than `IVR_STALE_AFTER_MS`) as `interrupted`; then stamp this
    process's live calls every `IVR_HEARTBEAT_MS` so no other process closes them, and
    look for stale calls again every `IVR_STALE_AFTER_MS`: a sibling process killed
    after this one started (`ivr serve --processes N`) leaves calls no start-up sees."""
    services = app[SERVICES]
    s = services.settings
    store = services.store
    assert store is not None

    async def close_stale() -> int:
        older_than = datetime.now(UTC) - timedelta(milliseconds=s.stale_after_ms)
        return await store.close_stale(older_than=older_than)

    closed = await close_stale()
    log.info("instance", instance_id=store.instance_id, interrupted_calls=closed)

    async def beat() -> None:
        since_sweep = 0
        while True:
            await asyncio.sleep(s.heartbeat_ms / 1000)
            since_sweep += s.heartbeat_ms
            try:
                await store.heartbeat()
                if since_sweep >= s.stale_after_ms:
                    since_sweep = 0
                    if closed := await close_stale():
                        log.warning("stale_calls_interrupted", calls=closed)
            except RETRYABLE as exc:  # the next beat tries again
                log.warning("heartbeat_failed", error=str(exc))

    task = asyncio.create_task(beat(), name="heartbeat")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


RETENTION_INTERVAL_S = 3600.0


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """`IVR_RETENTION_DAYS`: transcripts older than that are purged at start-up, then
    every `RETENTION_INTERVAL_S`; the call rows and their cost stay."""
    services = app[SERVICES]
    days = services.settings.retention_days
    if not days:
        yield
        return

    async def purge() -> None:
        assert services.store is not None
        before = datetime.now(UTC) - timedelta(days=days)
        try:
            turns = await services.store.purge_turns(before=before)
        except StoreError as exc:
            log.error("retention_purge_failed", error=str(exc))
            return
        log.info("retention_purge", turns=turns, older_than_days=days)

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(RETENTION_INTERVAL_S)
            await purge()

    await purge()  # before the first call: a restart never serves an overdue transcript
    task = asyncio.create_task(every_interval(), name="retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _engines_ctx(app: web.Application) -> AsyncIterator[None]:
    """Embedded engines always; remote ones in front of them when configured, falling
    back to the embedded engine for any request the provider fails."""
    services = app[SERVICES]
    s = services.settings
    pool = RecognizerPool(size=s.recognizer_workers, max_wait=s.recognizer_wait_ms / 1000,
                          max_hold=s.recognizer_hold_ms / 1000, slots=s.recognizer_slots,
                          on_wait=services.metrics.recognizer_waited)
    services.metrics.observe_recognizer(pool)
    services.workers_starting = starting = asyncio.create_task(
        _start_workers(services, pool), name="recognizer-start")
    embedded: Recognizer = lifecycle.StartingRecognizer(pool, starting)
    espeak = EspeakSynthesizer(voice=s.voice, rate=s.voice_rate)
    http = aiohttp.ClientSession()
    services.http = http
    recognizer = embedded
    synthesizer: Synthesizer = espeak
    clients: list[ProviderClient] = []
    waited = services.metrics.provider_waited
    if s.stt is not None:
        client = ProviderClient(s.stt, http, on_wait=waited)
        clients.append(client)
        recognizer = FallbackRecognizer(_remote_recognizer(s, client, http), embedded)
    if s.tts is not None:
        tts = ProviderClient(s.tts, http, on_wait=waited)
        clients.append(tts)
        synthesizer = FallbackSynthesizer(
            OpenAISynthesizer(tts), espeak, first_audio_s=s.tts_first_audio_ms / 1000,
            on_abandon=tts.breaker.failure)
    services.recognizer, services.synthesizer = recognizer, synthesizer
    if s.llm is not None:
        clients.append(ProviderClient(s.llm, http, on_wait=waited))
        services.llm = ChatClient(clients[-1], s.llm.model)
    services.metrics.observe_providers(clients)
    log.info("engines", recognizer=recognizer.name, synthesizer=synthesizer.name)
    _warn_unpriced(services)
    cache = SynthesisCache(s.speech_cache_dir, max_bytes=s.cache_mb * 1024 * 1024)
    services.speech_cache = CachedSynthesis(services.synthesizer, cache)
    yield
    services.recognizer_ready = False
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    await http.close()
    await pool.close()
    log.info("engines_closed")


def _remote_recognizer(s: Settings, client: ProviderClient,
                       http: aiohttp.ClientSession) -> Recognizer:
    """The STT provider's recognizer, by how it is asked (`IVR_STT_API`)."""
    if s.stt_api == "chat":
        return AudioChatRecognizer(client)
    if s.stt_api == "realtime":
        url = realtime_url(s.realtime_url, client.config.base_url)
        return RealtimeRecognizer(client, http, url)
    return OpenAIRecognizer(client)


async def _start_workers(services: Services, pool: RecognizerPool) -> None:
    try:
        await pool.start_workers()
    except SpeechError as exc:
        # Alive but never ready: /readyz says so, and each recognition fails with this.
        log.error("recognizer_start_failed", error=str(exc))
        raise
    services.recognizer_ready = True
    log.info("recognizer_ready", workers=pool.size)


async def _flows_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    s = services.settings
    library = FlowLibrary(s.flows, default=s.default_flow, routes=s.routes)
    library.load()
    services.library = library
    services.tools = default_registry(s.db)
    for tool in _webhook_tools(services):
        services.tools.register(tool)
    log.info("flows_loaded", flows=sorted(library.flows), routes=len(library.routes))
    # In the background: start-up never waits on a synthesizer (a hung remote one held
    # /healthz back a minute); a call needing a prompt not warm yet synthesizes it.
    services.prewarming = prewarm = start_prewarm(services)
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = asyncio.create_task(_reload(services))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # SIGHUP reloads at once; the watcher catches edits within a second anyway.
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    watcher = asyncio.create_task(_watch(services))
    yield
    for task in (watcher, prewarm):
        task.cancel()
    await asyncio.gather(watcher, prewarm, return_exceptions=True)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGHUP)


def _session(services: Services) -> aiohttp.ClientSession:
    assert services.http is not None, "the HTTP session lives as long as the engines"
    return services.http


def _webhook_tools(services: Services) -> list[Tool]:
    s = services.settings
    path = s.tools_file if s.tools_file is not None else s.flows.parent / "tools.yaml"
    specs = load_webhooks(path, missing_ok=s.tools_file is None)
    if not specs:
        return []
    hosts = frozenset(h.strip() for h in s.webhook_hosts.split(",") if h.strip())
    tools = webhook_tools(specs, allowed_hosts=hosts, secret=s.webhook_secret,
                          session_factory=lambda: _session(services))
    log.info("webhook_tools", tools=[t.name for t in tools], file=str(path))
    return tools


async def _reload(services: Services) -> None:
    assert services.library is not None
    if services.library.reload():
        await prewarm_flows(services)


async def _watch(services: Services, interval: float = 1.0) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await _reload(services)
        except OSError as exc:
            log.error("flows_watch_failed", error=str(exc))


async def _calls_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    log.info("app_cleanup", calls=len(app[SERVICES].calls))
    # Shutdown: end live calls first so their records land before the store closes.
    sessions = list(app[SERVICES].calls.values())
    if sessions:
        await asyncio.gather(*(s.end("shutdown") for s in sessions), return_exceptions=True)


def _warn_unpriced(services: Services) -> None:
    """An engine that may serve calls and has no rate is said now, not found as $0 later."""
    if services.pricing is None:
        return
    engines = [("stt", name) for name in serving_names(services.recognizer)]
    engines += [("tts", name) for name in serving_names(services.synthesizer)]
    if services.llm is not None:
        engines.append(("llm", services.llm.model))
    missing = services.pricing.unpriced(engines)
    if missing:
        log.warning("unpriced_engines", engines=missing,
                    hint="their usage is recorded and counted at $0 until a rate is added "
                         "to the pricing file named by IVR_PRICING")


def create_app(settings: Settings) -> web.Application:
    # The guard decides who reads /api/* and /metrics before any of their handlers runs.
    app = web.Application(middlewares=[access.guard])
    app[SERVICES] = services = Services(settings=settings)
    app[METRICS] = services.metrics
    app[ADMISSION] = Admission(services)
    services.pricing = Pricing.load()  # packaged defaults, IVR_PRICING merged over them
    # The lag probe starts once start-up's own work is done: that is not a call's lag.
    app.cleanup_ctx.extend([_store_ctx, _liveness_ctx, _retention_ctx, _engines_ctx,
                            _flows_ctx, lag_ctx, memory_ctx, _calls_ctx])
    app.router.add_post("/voice", twiml.voice)
    app.router.add_post("/status", twiml.status)
    app.router.add_post("/connect-action", twiml.connect_action)
    app.router.add_get("/healthz", twiml.healthz)
    app.router.add_get("/readyz", lifecycle.readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/media", handler.media)
    api.add_routes(app)
    dashboard.add_routes(app)
    api.api_guard_warning(services)
    return app
