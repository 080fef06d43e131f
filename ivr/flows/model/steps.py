"""The steps of a flow and where they lead: one model per verb, a union discriminated by
the verb key, and targets (a step name or `{flow: name}`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator
from pydantic_core import PydanticCustomError

from ivr.flows.model.base import FlowModel, Text, Value

__all__ = [
    "STEP_KIND_ERROR",
    "STEP_TAGS",
    "STEP_VERBS",
    "TARGET_FLOW_TAG",
    "TARGET_KIND_ERROR",
    "TARGET_STEP_TAG",
    "UNION_TAGS",
    "AnyStep",
    "AskStep",
    "BranchCase",
    "BranchStep",
    "CallStep",
    "Choice",
    "DtmfOptions",
    "FlowRef",
    "HangupStep",
    "LlmStep",
    "Reprompts",
    "SayStep",
    "SetStep",
    "Step",
    "Target",
    "TransferStep",
    "step_verb",
]

# In the order people read about them; error messages list them this way.
STEP_VERBS: tuple[str, ...] = (
    "say",
    "ask",
    "set",
    "branch",
    "call",
    "llm",
    "transfer",
    "hangup",
)
# The order a step's verb is looked for: `transfer` first because a transfer step may
# also carry a `say` (the words said before transferring).
_VERB_PRIORITY: tuple[str, ...] = ("transfer", *(v for v in STEP_VERBS if v != "transfer"))

# Union tags show up in pydantic error locations; the loader strips them, so they are
# spelled so that no sensible YAML key collides with them.
STEP_TAGS: dict[str, str] = {verb: f"step:{verb}" for verb in STEP_VERBS}
TARGET_STEP_TAG = "target:step"
TARGET_FLOW_TAG = "target:flow"
UNION_TAGS: frozenset[str] = frozenset({*STEP_TAGS.values(), TARGET_STEP_TAG, TARGET_FLOW_TAG})

# Custom pydantic error types raised by the discriminators; the loader words them.
STEP_KIND_ERROR = "step_kind"
TARGET_KIND_ERROR = "target_kind"


class FlowRef(FlowModel):
    """Hand the call over to another flow (`goto: {flow: billing}`)."""

    flow: Text


def _target_tag(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str | int | float):
        return TARGET_STEP_TAG
    if isinstance(value, dict | FlowRef):
        return TARGET_FLOW_TAG
    return None


Target: TypeAlias = Annotated[
    Annotated[Text, Tag(TARGET_STEP_TAG)] | Annotated[FlowRef, Tag(TARGET_FLOW_TAG)],
    Discriminator(
        _target_tag,
        custom_error_type=TARGET_KIND_ERROR,
        custom_error_message="expected a step name or {flow: name}",
    ),
]


class DtmfOptions(FlowModel):
    """Keypad collection for an ask; unset fields are derived from the choices or slot."""

    max_digits: int | None = Field(default=None, ge=1, le=32)
    terminator: Literal["#", "*"] | None = "#"
    inter_digit_ms: int = Field(default=3000, ge=500, le=30000)


class Reprompts(FlowModel):
    """What to say when the caller says nothing (no_input) or nothing we know (no_match)."""

    prompts: tuple[Text, ...] = Field(default=(), description="templates")
    max: int = Field(default=2, ge=0, le=10)

    def prompt(self, attempt: int) -> str | None:
        """The prompt for the 1-based `attempt`, the last one repeating; None if none given."""
        if not self.prompts:
            return None
        return self.prompts[min(attempt, len(self.prompts)) - 1]


class Choice(FlowModel):
    words: tuple[Text, ...] = ()
    key: str | None = None
    goto: Target
    name: Text | None = Field(default=None, description="label recorded when chosen")

    @property
    def label(self) -> str:
        """How analytics and transcripts name this choice."""
        if self.name is not None:
            return self.name
        if isinstance(self.goto, FlowRef):
            return f"flow:{self.goto.flow}"
        return self.goto


class SayStep(FlowModel):
    say: Text = Field(description="template")
    next: Target | None = None
    barge_in: bool = False


class AskStep(FlowModel):
    """A question: a menu (`choices`) or one typed answer (`slot`, then `next`)."""

    ask: Text = Field(description="template")
    choices: tuple[Choice, ...] = ()
    slot: Text | None = Field(default=None, description="name of the slot this ask fills")
    confirm: Text | None = Field(
        default=None, description="yes/no question (template) asked once the slot is filled"
    )
    next: Target | None = Field(default=None, description="after the slot is filled")
    expect: Text | None = Field(
        default=None,
        description="the values the caller may answer with (a template giving a list of "
                    "values of the slot's type: times \"HH:MM\", ISO dates, choice values, "
                    "digit strings, numbers), e.g. \"{{ vars.free.available }}\": the "
                    "recognizer then listens for just those (time, date, choice, digits and "
                    "number slots); keys work as before; an empty or failing list listens "
                    "for any value",
    )
    barge_in: bool = True
    no_input: Reprompts = Reprompts()
    no_match: Reprompts = Reprompts()
    fallback: Target | None = None
    speech: bool = True
    timeout_ms: int | None = Field(default=None, ge=1000, le=60000)
    end_silence_ms: int | None = Field(default=None, ge=100, le=5000)
    max_utterance_ms: int | None = Field(default=None, ge=1000, le=60000)
    dtmf: DtmfOptions | None = None
    verify: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="check a voice answer with a short question (\"cleaning, right?\"): "
                    "auto when unsure (see the flow's certainty), always, or never; keys "
                    "are never checked",
    )

    @field_validator("choices")
    @classmethod
    def _choices_not_empty(cls, value: tuple[Choice, ...]) -> tuple[Choice, ...]:
        # Absent means "this ask fills a slot"; written but empty is a mistake, and the
        # loader words this error type like any other too-short list.
        if not value:
            raise PydanticCustomError(
                "too_short", "List should have at least 1 item", {"min_length": 1}
            )
        return value


class SetStep(FlowModel):
    set: dict[str, Value] = Field(min_length=1, description="slot name -> template or literal")
    next: Target | None = None


class BranchCase(FlowModel):
    if_: Text = Field(alias="if", description="condition (a Jinja expression)")
    goto: Target


class BranchStep(FlowModel):
    branch: tuple[BranchCase, ...] = Field(min_length=1)
    else_: Target = Field(alias="else")


class CallStep(FlowModel):
    call: Text = Field(description="tool name, listed in the flow's tools")
    args: dict[str, Value] = Field(default_factory=dict, description="name -> template")
    result: Text | None = Field(default=None, description="store the result as vars.<result>")
    next: Target | None = None
    on_error: Target | None = None


class LlmStep(FlowModel):
    llm: Text = Field(description="system prompt (template)")
    tools: tuple[Text, ...] = ()
    exit_when: tuple[Text, ...] = Field(default=(), description="conditions that end the step")
    max_rounds: int = Field(default=8, ge=1, le=50)
    next: Target | None = None
    fallback: Target = Field(description="where to go when no LLM is configured or it fails")


class TransferStep(FlowModel):
    transfer: Text = Field(description="phone number (template)")
    say: Text | None = Field(default=None, description="said before transferring (template)")


class HangupStep(FlowModel):
    # Required but nullable: the verb must be present to pick the step kind, while the
    # final words are optional (`goodbye: {hangup: }`).
    hangup: str | None


_STEP_TYPES: dict[type[BaseModel], str] = {
    SayStep: STEP_TAGS["say"],
    AskStep: STEP_TAGS["ask"],
    SetStep: STEP_TAGS["set"],
    BranchStep: STEP_TAGS["branch"],
    CallStep: STEP_TAGS["call"],
    LlmStep: STEP_TAGS["llm"],
    TransferStep: STEP_TAGS["transfer"],
    HangupStep: STEP_TAGS["hangup"],
}


def step_verb(value: Any) -> str | None:
    """The verb of a raw step mapping: the first verb key present, or None."""
    if isinstance(value, dict):
        for verb in _VERB_PRIORITY:
            if verb in value:
                return verb
    return None


def _step_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return _STEP_TYPES.get(type(value))
    verb = step_verb(value)
    return None if verb is None else STEP_TAGS[verb]


Step: TypeAlias = Annotated[
    Annotated[SayStep, Tag(STEP_TAGS["say"])]
    | Annotated[AskStep, Tag(STEP_TAGS["ask"])]
    | Annotated[SetStep, Tag(STEP_TAGS["set"])]
    | Annotated[BranchStep, Tag(STEP_TAGS["branch"])]
    | Annotated[CallStep, Tag(STEP_TAGS["call"])]
    | Annotated[LlmStep, Tag(STEP_TAGS["llm"])]
    | Annotated[TransferStep, Tag(STEP_TAGS["transfer"])]
    | Annotated[HangupStep, Tag(STEP_TAGS["hangup"])],
    Discriminator(
        _step_tag,
        custom_error_type=STEP_KIND_ERROR,
        custom_error_message=f"a step needs one of: {', '.join(STEP_VERBS)}",
    ),
]

AnyStep: TypeAlias = (
    SayStep | AskStep | SetStep | BranchStep | CallStep | LlmStep | TransferStep | HangupStep
)

