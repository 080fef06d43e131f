"""The fixed words of a flow, and putting them in the synthesis cache before calls come.

A prompt without template syntax renders as itself, so its audio is the same on every
call and can be synthesized once at startup; the first caller then hears the greeting
without waiting on the synthesizer. Texts are stripped exactly as the engine strips
rendered text (`FlowRunner._text`), so a prewarmed entry has the key a call looks up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import structlog

from ivr.flows import templates
from ivr.flows.model import AnyStep, AskStep, Flow, HangupStep, SayStep, TransferStep
from ivr.speech.cache import CachedSynthesis

__all__ = ["prewarm", "static_prompts"]

log = structlog.get_logger("ivr.flows.prompts")


def _spoken(step: AnyStep) -> Iterator[str]:
    """Every text the engine may play for `step` (templates included)."""
    if isinstance(step, SayStep):
        yield step.say
    elif isinstance(step, AskStep):
        yield step.ask
        yield from step.no_input.prompts
        yield from step.no_match.prompts
        if step.confirm is not None:
            yield step.confirm
    elif isinstance(step, TransferStep):
        # The number is not spoken; only the words said before transferring are.
        if step.say is not None:
            yield step.say
    elif isinstance(step, HangupStep):
        if step.hangup:
            yield step.hangup
    # set, branch, call and llm say nothing themselves (an llm prompt is for the model).


def static_prompts(flow: Flow) -> list[str]:
    """The prompts of `flow` that contain no template syntax, in document order, once each."""
    seen: dict[str, None] = {}
    for step in flow.steps.values():
        for source in _spoken(step):
            if templates.has_syntax(source):
                continue
            text = source.strip()
            if text:  # the engine plays nothing for empty words
                seen.setdefault(text, None)
    return list(seen)


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
