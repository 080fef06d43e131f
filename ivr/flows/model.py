"""The call-flow language: pydantic models of one YAML flow file.

A flow is a named graph of steps. Each step does exactly one thing, and the thing
it does is named by its first key (its *verb*), so a step reads like a sentence::

    name: demo                        # required; how calls and other flows refer to it
    description: Acme main line       # optional, for people
    voice: {name: en-us, rate: 165}   # optional synthesizer voice and words per minute
    start: greet                      # required; the step the call begins with
    steps:
      greet:
        say: Thanks for calling Acme.   # speak, then go on
        next: menu                      # optional; without it the call ends here
        barge_in: false                 # optional; may the caller talk over it (default false)
      menu:
        ask: Say sales or support, or press 1 or 2.   # prompt, then listen
        barge_in: true                  # optional (default true)
        choices:
          - {words: [sales, buy], key: "1", goto: sales}
          - {words: [support, help], key: "2", goto: support, name: support}
        no_input:                       # optional; caller said nothing
          prompts: ["Sorry, I didn't hear you. Say sales or support."]
          max: 2                        # reprompts before the fallback (default 2)
        no_match:                       # optional; caller said something else
          prompts: ["Sorry, I didn't get that. Say sales or support."]
        fallback: goodbye               # optional; where to go when reprompts run out
        timeout_ms: 5000                # optional endpointing overrides; unset means
        end_silence_ms: 800             #   "use the service's configured default"
        max_utterance_ms: 10000
        speech: true                    # optional; false listens for keys only
        dtmf: {max_digits: 1, terminator: "#", inter_digit_ms: 3000}   # optional
      sales: {say: Sales will call you back today., next: goodbye}
      support: {say: Please visit acme dot com slash help., next: {flow: survey}}
      goodbye: {hangup: Goodbye.}       # final words are optional: `hangup:` alone

Verbs: `say` (speak, then `next`), `ask` (prompt, listen, branch on `choices`),
`hangup` (optional final words, then end the call). A target (`next`, `goto`,
`fallback`) is either a step name of this flow or `{flow: other}` to hand the call
to another flow.

Semantics worth knowing when writing a flow:
- A choice matches when one of its `words` (a word or a phrase) occurs in what the
  caller said; longer phrases beat shorter ones; a tie between choices is no match.
  Digit keys match exactly. Number words and digits are interchangeable ("one" == "1").
- Reprompts escalate: the n-th no-input plays the n-th `no_input` prompt (the last one
  repeats; none at all repeats the question). No-input and no-match are counted
  separately and reset each time the step is entered.
- When reprompts run out the call goes to `fallback`, or ends when there is none; the
  call's outcome is then "fallback" however it ends.
- YAML 1.1 booleans are switched off: `yes`, `no`, `on`, `off` are plain words (only
  `true`/`false` are booleans), and numbers are accepted where text is expected.

Growth path: steps form a union discriminated by their verb key (a callable
discriminator, so the JSON Schema from `Flow.model_json_schema()` is a `oneOf` of
objects each requiring its verb), every model forbids unknown keys, and the structural
walk the validators, graphs and lints need lives in `Flow.links()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

# A path into the flow document, as pydantic reports it (`("steps", "menu", "next")`).
Loc: TypeAlias = tuple[str | int, ...]

STEP_VERBS: tuple[str, ...] = ("say", "ask", "hangup")

# Union tags show up in pydantic error locations; the loader strips them, so they are
# spelled so that no sensible YAML key collides with them.
STEP_TAGS: dict[str, str] = {verb: f"step:{verb}" for verb in STEP_VERBS}
TARGET_STEP_TAG = "target:step"
TARGET_FLOW_TAG = "target:flow"
UNION_TAGS: frozenset[str] = frozenset({*STEP_TAGS.values(), TARGET_STEP_TAG, TARGET_FLOW_TAG})

# Custom pydantic error types raised by the discriminators; the loader words them.
STEP_KIND_ERROR = "step_kind"
TARGET_KIND_ERROR = "target_kind"


class _Model(BaseModel):
    # Flows are shared by concurrent calls, hence frozen; numbers are accepted as text
    # because YAML turns `key: 1` or `say: 42` into ints behind the author's back.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


Text = Annotated[str, Field(min_length=1)]


class FlowRef(_Model):
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


class Voice(_Model):
    name: Text | None = None
    rate: int | None = Field(default=None, ge=80, le=450, description="words per minute")


class DtmfOptions(_Model):
    """Keypad collection for an ask; unset fields are derived from the choices' keys."""

    max_digits: int | None = Field(default=None, ge=1, le=32)
    terminator: Literal["#", "*"] | None = "#"
    inter_digit_ms: int = Field(default=3000, ge=500, le=30000)


class Reprompts(_Model):
    """What to say when the caller says nothing (no_input) or nothing we know (no_match)."""

    prompts: tuple[Text, ...] = ()
    max: int = Field(default=2, ge=0, le=10)

    def prompt(self, attempt: int) -> str | None:
        """The prompt for the 1-based `attempt`, the last one repeating; None if none given."""
        if not self.prompts:
            return None
        return self.prompts[min(attempt, len(self.prompts)) - 1]


class Choice(_Model):
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


class SayStep(_Model):
    say: Text
    next: Target | None = None
    barge_in: bool = False


class AskStep(_Model):
    ask: Text
    choices: tuple[Choice, ...] = Field(min_length=1)
    barge_in: bool = True
    no_input: Reprompts = Reprompts()
    no_match: Reprompts = Reprompts()
    fallback: Target | None = None
    speech: bool = True
    timeout_ms: int | None = Field(default=None, ge=1000, le=60000)
    end_silence_ms: int | None = Field(default=None, ge=100, le=5000)
    max_utterance_ms: int | None = Field(default=None, ge=1000, le=60000)
    dtmf: DtmfOptions | None = None


class HangupStep(_Model):
    # Required but nullable: the verb must be present to pick the step kind, while the
    # final words are optional (`goodbye: {hangup: }`).
    hangup: str | None


_STEP_TYPES: dict[type[BaseModel], str] = {
    SayStep: STEP_TAGS["say"],
    AskStep: STEP_TAGS["ask"],
    HangupStep: STEP_TAGS["hangup"],
}


def step_verb(value: Any) -> str | None:
    """The verb of a raw step mapping: the first verb key present, or None."""
    if isinstance(value, dict):
        for verb in STEP_VERBS:
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
    | Annotated[HangupStep, Tag(STEP_TAGS["hangup"])],
    Discriminator(
        _step_tag,
        custom_error_type=STEP_KIND_ERROR,
        custom_error_message="a step needs one of: say, ask, hangup",
    ),
]


class Flow(_Model):
    name: Text
    description: str = ""
    voice: Voice | None = None
    start: Text
    steps: dict[str, Step] = Field(min_length=1)

    def links(self) -> Iterator[tuple[str, Loc, Target]]:
        """Every edge of the step graph: (from step, location of the target, target)."""
        for name, step in self.steps.items():
            base: Loc = ("steps", name)
            if isinstance(step, SayStep):
                if step.next is not None:
                    yield name, (*base, "next"), step.next
            elif isinstance(step, AskStep):
                for i, choice in enumerate(step.choices):
                    yield name, (*base, "choices", i, "goto"), choice.goto
                if step.fallback is not None:
                    yield name, (*base, "fallback"), step.fallback
