"""A whole flow: its settings, slots and steps, and the walks over them (links, templates)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple, TypeAlias

from pydantic import Field

from ivr.flows.model.base import FlowModel, Loc, Text
from ivr.flows.model.slots import SlotDef
from ivr.flows.model.steps import (
    AskStep,
    BranchStep,
    CallStep,
    LlmStep,
    Reprompts,
    SayStep,
    SetStep,
    Step,
    Target,
    TransferStep,
)

__all__ = [
    "DEFAULT_TIMEZONE", "Certainty", "Engines", "Flow", "TemplateKind", "TemplateUse", "Voice",
]

DEFAULT_TIMEZONE = "America/New_York"


class Voice(FlowModel):
    name: Text | None = Field(default=None, description="embedded (espeak-ng) voice, e.g. en-us")
    remote: Text | None = Field(
        default=None, description="voice for a remote synthesizer (IVR_TTS_*), e.g. alloy")
    rate: int | None = Field(default=None, ge=80, le=450, description="words per minute")


TemplateKind: TypeAlias = Literal["text", "condition", "value"]


class TemplateUse(NamedTuple):
    """One template or condition in a flow, where it is and when it is evaluated."""

    step: str
    loc: Loc
    source: str
    kind: TemplateKind  # text: rendered to words; condition: an expression; value: set/args
    after: bool = False  # evaluated after the step did its work (confirm, exit_when)


class Engines(FlowModel):
    """Per-flow choices among the configured remote engines, and how speech is heard."""

    llm_model: Text | None = Field(
        default=None, description="model for this flow's llm steps (else IVR_LLM_MODEL)")
    llm_mode: Literal["pipeline", "audio", "realtime"] | None = Field(
        default=None,
        description="how llm steps talk (else IVR_LLM_MODE): pipeline (recognizer, text "
                    "model, synthesizer), audio (GPT-4o audio in and out), realtime "
                    "(a Realtime session, µ-law both ways)")
    realtime_model: Text | None = Field(
        default=None, description="model of realtime llm steps (else IVR_REALTIME_MODEL)")
    barge_in: Literal["vad", "words"] | None = Field(
        default=None, description="what may cut a prompt: any speech (vad) or only speech "
        "that is believably a word (words); else IVR_BARGE_IN")


class Certainty(FlowModel):
    """When a voice answer counts as sure (`ask` steps' `verify`).

    The defaults come from the embedded recognizer (pocketsphinx) on the 8 kHz phone path
    (espeak voices; README "Never act on a guess"): its confidence is a grammar posterior
    shared among a phrase list's near-synonyms, so right answers score 0.05-0.48 and
    wrong ones 0.04-0.49 - it only tells the worst guesses apart. The confidence floors
    catch that tail; the margins (`Speech.margin`, when the recognizer reports one) are
    what separate "yes" from "no".
    """

    confidence: float = Field(
        default=0.05, ge=0, le=1, description="below it a voice answer is unsure")
    margin: float = Field(
        default=0.1, ge=0, le=1,
        description="a smaller margin to the second-best hypothesis is unsure")
    commit_confidence: float = Field(
        default=0.07, ge=0, le=1,
        description="a voice answer that books, cancels or reschedules needs at least this")
    commit_margin: float = Field(
        default=0.25, ge=0, le=1,
        description="... and at least this margin over the next-best (\"no\")")


class Flow(FlowModel):
    name: Text
    description: str = ""
    voice: Voice | None = None
    engines: Engines | None = None
    certainty: Certainty = Certainty()
    timezone: Text = Field(default=DEFAULT_TIMEZONE, description="IANA time zone of `now`")
    start: Text
    on_error: Target | None = Field(
        default=None, description="where a failed tool (without its own on_error) or template goes"
    )
    tools: tuple[Text, ...] = Field(default=(), description="tool names `call` steps may use")
    slots: dict[str, SlotDef] = Field(default_factory=dict)
    steps: dict[str, Step] = Field(min_length=1)

    def links(self) -> Iterator[tuple[str, Loc, Target]]:
        """Every edge of the step graph: (from step, location of the target, target).

        The flow-level `on_error` is not an edge of any one step; see `Flow.on_error`.
        """
        for name, step in self.steps.items():
            base: Loc = ("steps", name)
            if isinstance(step, AskStep):
                for i, choice in enumerate(step.choices):
                    yield name, (*base, "choices", i, "goto"), choice.goto
            if isinstance(step, BranchStep):
                for i, case in enumerate(step.branch):
                    yield name, (*base, "branch", i, "goto"), case.goto
                yield name, (*base, "else"), step.else_
            for field in ("next", "fallback", "on_error"):
                target = getattr(step, field, None)
                if target is not None:
                    yield name, (*base, field), target

    def targets(self) -> Iterator[tuple[Loc, Target]]:
        """Every target written in the flow: the links of the step graph, then the
        flow-level `on_error`."""
        for _, loc, target in self.links():
            yield loc, target
        if self.on_error is not None:
            yield ("on_error",), self.on_error

    def templates(self) -> Iterator[TemplateUse]:
        """Every template and condition, in document order within each step."""
        for name, step in self.steps.items():
            base: Loc = ("steps", name)
            if isinstance(step, SayStep):
                yield TemplateUse(name, (*base, "say"), step.say, "text")
            elif isinstance(step, AskStep):
                yield TemplateUse(name, (*base, "ask"), step.ask, "text")
                for field in ("no_input", "no_match"):
                    reprompts: Reprompts = getattr(step, field)
                    for i, prompt in enumerate(reprompts.prompts):
                        yield TemplateUse(name, (*base, field, "prompts", i), prompt, "text")
                if step.expect is not None:
                    yield TemplateUse(name, (*base, "expect"), step.expect, "value")
                if step.confirm is not None:
                    yield TemplateUse(name, (*base, "confirm"), step.confirm, "text", True)
            elif isinstance(step, SetStep | CallStep):
                field = "set" if isinstance(step, SetStep) else "args"
                values = step.set if isinstance(step, SetStep) else step.args
                for key, value in values.items():
                    if isinstance(value, str):
                        yield TemplateUse(name, (*base, field, key), value, "value")
            elif isinstance(step, BranchStep):
                for i, case in enumerate(step.branch):
                    yield TemplateUse(name, (*base, "branch", i, "if"), case.if_, "condition")
            elif isinstance(step, LlmStep):
                yield TemplateUse(name, (*base, "llm"), step.llm, "text")
                for i, cond in enumerate(step.exit_when):
                    yield TemplateUse(name, (*base, "exit_when", i), cond, "condition", True)
            elif isinstance(step, TransferStep):
                if step.say is not None:
                    yield TemplateUse(name, (*base, "say"), step.say, "text")
                yield TemplateUse(name, (*base, "transfer"), step.transfer, "text")
            elif step.hangup:
                yield TemplateUse(name, (*base, "hangup"), step.hangup, "text")
