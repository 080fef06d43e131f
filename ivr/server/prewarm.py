"""Putting a flow's fixed words in the synthesis cache before calls come.

The static prompts (`flows.prompts.static_prompts`) render the same on every call, so
they are synthesized once, at start-up and after each reload: the first caller hears the
greeting without waiting on the synthesizer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import structlog

from ivr.flows.model import Flow
from ivr.flows.prompts import static_prompts
from ivr.server.services import Services
from ivr.speech.cache import CachedSynthesis

__all__ = ["prewarm", "prewarm_flows"]

log = structlog.get_logger("ivr.server.prewarm")


async def prewarm(
    flows: Iterable[Flow], cached: CachedSynthesis,
    voice_for: Callable[[Flow], tuple[str, int]],
) -> int:
    """Synthesize every static prompt of `flows` into the cache, each with the voice and
    rate a call of that flow uses (`voice_for`, the same resolver `CallSession` uses);
    returns how many were not cached yet. Sequential: the synthesizer has a single thread
    anyway, and calls that arrive meanwhile should not queue behind a burst of prewarm."""
    started = time.perf_counter()
    fresh = failed = total = 0
    for flow in flows:
        voice, rate = voice_for(flow)
        for text in static_prompts(flow):
            total += 1
            try:
                if await cached.prepare(text, voice, rate):
                    fresh += 1
            except Exception as exc:
                # Prewarming is an optimisation: a prompt that fails here fails (and is
                # reported) again on the call that needs it; the rest still get cached.
                failed += 1
                log.warning("prewarm_failed", flow=flow.name, text=text, error=str(exc))
    log.info("prewarm_done", prompts=total, synthesized=fresh, failed=failed,
             ms=round((time.perf_counter() - started) * 1000, 1))
    return fresh


async def prewarm_flows(services: Services) -> None:
    """Synthesize every static prompt of the server's flows before a call needs it."""
    if services.speech_cache is None:
        return
    started = time.perf_counter()
    count = await prewarm(services.flows.values(), services.speech_cache, services.voice_for)
    log.info("prompts_prewarmed", synthesized=count,
             ms=round((time.perf_counter() - started) * 1000))
