"""The fixed words of a flow: its prompts without template syntax.

A prompt without template syntax renders as itself, so its audio is the same on every
call and can be synthesized once at startup (`server.prewarm`); the first caller then
hears the greeting without waiting on the synthesizer. Texts are stripped exactly as the
engine strips rendered text (`FlowRunner._text`), so a prewarmed entry has the key a call
looks up.
"""

from __future__ import annotations

from collections.abc import Iterator

from ivr.flows import templates
from ivr.flows.model import AnyStep, AskStep, Flow, HangupStep, SayStep, TransferStep

__all__ = ["static_prompts"]


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
