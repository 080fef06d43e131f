"""Putting a flow's fixed words in the synthesis cache before calls come.

The static prompts (`flows.prompts.static_prompts`) render the same on every call, so
they are synthesized once, after start-up and after each reload: the first caller hears
the greeting without waiting on the synthesizer.

Prewarming never holds up start-up: it runs in the background (`start_prewarm`, a task
the app owns), bounded by `PREWARM_BUDGET_S`, while the server already answers. A call
whose prompt is not warm yet synthesizes it, or joins the prewarm's synthesis of it in
flight (`CachedSynthesis` synthesizes one key once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog

from ivr.flows.model import Flow
from ivr.flows.prompts import static_prompts
from ivr.server.services import SERVER_PROMPTS, Services
from ivr.speech.cache import CachedSynthesis

__all__ = ["PREWARM_BUDGET_S", "prewarm", "prewarm_flows", "start_prewarm"]

log = structlog.get_logger("ivr.server.prewarm")

# The shipped flows prewarm in ~10 s on espeak alone, and a remote voice gives up on
# a prompt after `IVR_TTS_FIRST_AUDIO_MS`; two minutes is ample for either, and what is
# left after it is synthesized by the calls that need it.
PREWARM_BUDGET_S = 120.0


async def prewarm(
    flows: Iterable[Flow], cached: CachedSynthesis,
    voice_for: Callable[[Flow], tuple[str, int]], *, extra: Iterable[str] = (),
) -> int:
    """Synthesize every static prompt of `flows` into the cache, each with the voice and
    rate a call of that flow uses (`voice_for`, the same resolver `CallSession` uses);
    `extra` are the server's own words, said in every flow's voice too;
    returns how many were not cached yet. Sequential: the synthesizer has a single thread
    anyway, and calls that arrive meanwhile should not queue behind a burst of prewarm."""
    started = time.perf_counter()
    fresh = failed = total = 0
    for flow in flows:
        voice, rate = voice_for(flow)
        for text in [*static_prompts(flow), *extra]:
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


async def prewarm_flows(services: Services, *, budget_s: float = PREWARM_BUDGET_S) -> None:
    """Synthesize every static prompt of the server's flows (the default flow's first,
    its greeting is what the next caller hears) and the server's own, within `budget_s`."""
    if services.speech_cache is None:
        return
    default = services.settings.default_flow
    flows = sorted(services.flows.values(), key=lambda f: f.name != default)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(budget_s):
            count = await prewarm(flows, services.speech_cache, services.voice_for,
                                  extra=SERVER_PROMPTS)
    except TimeoutError:
        log.warning("prewarm_timed_out", budget_s=budget_s)
        return
    log.info("prompts_prewarmed", synthesized=count,
             ms=round((time.perf_counter() - started) * 1000))


def start_prewarm(services: Services) -> asyncio.Task[None]:
    """Prewarm in the background; the caller owns the task (cancels and awaits it)."""
    return asyncio.create_task(prewarm_flows(services), name="prewarm")
