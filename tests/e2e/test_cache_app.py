"""The server's synthesis cache: static prompts are prewarmed and survive restarts."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.sim.run import run_call
from ivr.sim.script import PressKeys
from ivr.speech.cache import CachedSynthesis
from tests.conftest import make_settings


async def _started(tmp_path: Path) -> tuple[TestServer, CachedSynthesis]:
    """The server once its background prewarm is done."""
    app = create_app(make_settings(tmp_path, recognizer_workers=1))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    services = app[SERVICES]
    cached = services.speech_cache
    assert cached is not None and services.prewarming is not None
    await services.prewarming
    return server, cached


async def test_greeting_needs_no_synthesis_after_start_up(tmp_path: Path) -> None:
    """A keypad call through the demo flow plays only cached audio: nothing is synthesized."""
    server, cached = await _started(tmp_path)
    try:
        prewarmed = cached.synthesized
        assert prewarmed > 10  # every static prompt of every shipped flow
        hits = cached.cache.stats.hits
        t = await run_call(f"ws://127.0.0.1:{server.port}/media", [PressKeys("3")], flow="demo",
                           transcribe=False)
        assert t.closed_by == "server"
        assert cached.synthesized == prewarmed
        assert cached.cache.stats.hits >= hits + 4  # greeting, menu, hours, goodbye
        async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{server.port}/healthz"
        ) as resp:
            health = await resp.json()
        assert health["speech_cache"]["hits"] >= 4 and health["speech_cache"]["hit_rate"] > 0
        # /metrics parses with the Prometheus text parser and counted the call.
        async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{server.port}/metrics"
        ) as resp:
            text = await resp.text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
        }
        assert samples[("ivr_calls_total", (("outcome", "completed"),))] == 1
        assert samples[("ivr_active_calls", ())] == 0
        assert samples[("ivr_turn_latency_seconds_count", (("stage", "response"),))] >= 1
    finally:
        await server.close()


async def test_prewarmed_prompts_survive_a_restart(tmp_path: Path) -> None:
    """The second start reads every static prompt from disk and synthesizes none."""
    server, first = await _started(tmp_path)
    await server.close()
    assert first.synthesized > 10
    assert any((tmp_path / "ivr-cache").iterdir())
    server, second = await _started(tmp_path)
    try:
        assert second.synthesized == 0
    finally:
        await server.close()
