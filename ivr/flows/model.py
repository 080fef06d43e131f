"""The call-flow language: pydantic models of one YAML flow file.

A flow is a named graph of steps. Each step does exactly one thing, and the thing it
does is named by its *verb* key, so a step reads like a sentence. A complete flow
(every key shown; the `# yaml-language-server` line lets an editor autocomplete and
check the file against `flows/schema.json`, which `python -m ivr.flows.schema` writes)::

    # yaml-language-server: $schema=schema.json
    name: booking                     # required; how calls and other flows refer to it
    description: Book a table.        # optional, for people
    voice: {name: en-us, rate: 165}   # optional synthesizer voice and words per minute
    timezone: America/New_York        # optional IANA zone of `now` and of dates said
    start: greet                      # required; the step the call begins with
    on_error: sorry                   # optional; where a failed tool or template goes
    tools: [bookings.find, bookings.book]   # the tools `call` steps may use
    slots:                            # typed answers the flow collects (see slots.py)
      day: {type: date, description: the day of the visit}
      time: {type: time}
      party: {type: number, min: 1, max: 12}
      name: {type: text}
      seating:
        type: choice
        choices:
          - {value: inside, words: [inside, indoors], key: "1"}
          - {value: terrace, words: [terrace, outside], key: "2"}
    steps:
      greet:
        say: "Good {{ 'morning' if now.hour < 12 else 'day' }}, this is Acme."   # template
        next: menu                      # optional; without it the call ends here
        barge_in: false                 # optional; may the caller talk over it (default false)
      menu:                             # an ask with choices: a menu
        ask: Say booking or hours, or press 1 or 2.
        barge_in: true                  # optional (default true)
        choices:
          - {words: [booking, book], key: "1", goto: ask_day}
          - {words: [hours, opening hours], key: "2", goto: hours, name: hours}
        no_input:                       # optional; caller said nothing
          prompts: ["Sorry, I didn't hear you. Say booking or hours."]
          max: 2                        # reprompts before the fallback (default 2)
        no_match:                       # optional; caller said something else
          prompts: ["Sorry, I didn't get that. Say booking or hours."]
        fallback: agent                 # optional; where to go when reprompts run out
        timeout_ms: 5000                # optional endpointing overrides; unset means
        end_silence_ms: 800             #   "use the service's configured default"
        max_utterance_ms: 10000
        speech: true                    # optional; false listens for keys only
        dtmf: {max_digits: 1, terminator: "#", inter_digit_ms: 3000}   # optional
      hours: {say: We are open noon to ten., next: goodbye}
      ask_day:                          # an ask with a slot: fills one typed answer
        ask: For which day?
        slot: day
        confirm: "{{ slots.day | spoken_date }}. Is that right?"   # optional yes/no check
        no_match: {prompts: ["Say a day, like next Friday."]}
        fallback: agent
        next: ask_time                  # where to go once the slot is filled (and confirmed)
      ask_time: {ask: "At what time?", slot: time, next: ask_party, fallback: agent}
      ask_party:
        ask: For how many people? You can also type the number.
        slot: party
        end_silence_ms: 1200
        next: check_party
      check_party:                      # the first condition that holds picks the target
        branch:
          - {if: "slots.party > 8", goto: big_party}
        else: ask_seating
      big_party: {say: For groups above eight our staff will help you., next: agent}
      ask_seating: {ask: "Inside or on the terrace?", slot: seating, next: find}
      find:                             # run a tool; its result is stored under vars
        call: bookings.find
        args: {day: "{{ slots.day }}", time: "{{ slots.time }}", party: "{{ slots.party }}"}
        result: found
        next: has_table
        on_error: agent                 # optional; else the flow's on_error
      has_table:
        branch:
          - {if: "vars.found.available", goto: take_time}
        else: full
      take_time:                        # store values in slots: the time the tool offered
        set: {time: "{{ vars.found.time }}"}
        next: ask_name
      full: {say: "Sorry, {{ slots.day | spoken_date }} is full.", next: ask_day}
      ask_name: {ask: "Under which name?", slot: name, next: book}
      book:
        call: bookings.book
        args:
          day: "{{ slots.day }}"        # a lone {{ expression }} keeps its type
          time: "{{ slots.time }}"
          party: "{{ slots.party }}"
          name: "{{ slots.name }}"
          phone: "{{ caller }}"
          seating: "{{ slots.seating }}"
        result: booking
        next: booked
      booked:
        say: >-
          Booked for {{ slots.party }} on {{ slots.day | spoken_date }} at
          {{ slots.time | spoken_time }}. Your reference is
          {{ vars.booking.ref | spoken_digits }}.
        next: {flow: survey}            # hand the call over to another flow
      agent:                            # an LLM agent step; until one is configured the
        llm: You take table bookings for Acme. Be brief.   # runner takes `fallback`
        tools: [bookings.find, bookings.book]
        exit_when: ["vars.booking is defined"]
        max_rounds: 8
        next: goodbye
        fallback: operator              # required
      operator:
        transfer: "+15550100000"        # a number or a template
        say: Let me put you through.    # optional, said first
      sorry: {say: "Sorry, something went wrong.", next: operator}
      goodbye: {hangup: Goodbye.}       # final words are optional: `hangup:` alone

Verbs: `say` (speak, then `next`), `ask` (prompt, listen; branch on `choices`, or fill
`slot` then `next`), `set` (store values in slots, then `next`), `branch` (go to the
first target whose `if` holds, else `else`), `call` (run a tool, store its result under
`vars`, then `next`; on failure `on_error`), `llm` (an agent; for now always takes its
`fallback`), `transfer` (optionally say something, then transfer the call), `hangup`
(optional final words, then end the call). A target (`next`, `goto`, `fallback`,
`else`, `on_error`) is either a step name of this flow or `{flow: other}` to hand the
call to another flow.

Templates and conditions are Jinja2, sandboxed and strict (an unknown name is an
error, not an empty string). Text fields (prompts, `confirm`, `hangup`, `transfer`)
are templates; `if` and `exit_when` are expressions; `set` and `args` values are
templates whose lone `{{ expression }}` keeps its type (a date stays a date). Names:
`slots` (typed values: dates, times, numbers, text), `vars` (tool results by `result`
name), `caller` (the caller's number), `now` (aware datetime in `timezone`). Filters
`spoken_date`, `spoken_time` and `spoken_digits` turn values into words. Templates are
compiled when the flow loads, so a broken one is a load error at its line.

Semantics worth knowing when writing a flow:
- A choice matches when one of its `words` (a word or a phrase) occurs in what the
  caller said; longer phrases beat shorter ones; a tie between choices is no match.
  Digit keys match exactly. Number words and digits are interchangeable ("one" == "1").
- A slot ask understands speech and keys as its slot type does (keys: digits as
  pressed, a choice's `key`, yes_no 1 = yes and 2 = no, date MMDD, time HHMM); with
  `confirm`, a yes goes to `next` and a no forgets the value and asks again (a no
  counts as a no-match, so endless rejections reach the fallback). A slot ask without
  `next` ends the call once filled.
- `set` converts each value to its slot's type: a literal or rendered text is parsed
  as the caller's answer would be ("tomorrow", "2026-11-24", "4"), a typed value
  (a date from `now.date()`, a number) must fit the slot. Setting an undeclared slot
  is a load error; a value that does not fit is one too when it is a literal, and
  takes `on_error` when a template made it (no slot changes then).
- `branch` evaluates its `if`s in order; `else` is required.
- A `call` waits for the tool's result; `args` values are sent as JSON (dates and
  times as ISO text). `result: name` stores the result mapping as `vars.name`.
- Reprompts escalate: the n-th no-input plays the n-th `no_input` prompt (the last one
  repeats; none at all repeats the question). No-input and no-match are counted
  separately and reset each time the step is entered.
- When reprompts run out the call goes to `fallback`, or ends when there is none; the
  call's outcome is then "fallback" however it ends.
- A failing tool goes to its step's `on_error`, else the flow's `on_error`; a template
  that fails at run time goes to the flow's `on_error` (once). Without one the call
  ends with outcome "error".
- Loading (and `ivr flows check`) rejects unreachable steps, steps from which the call
  can never end, slots or results read where no path has set them (a warning when only
  some paths set them; guard such reads with `is defined` or `| default(...)`), tools
  not declared in `tools`, unknown names in templates, and time zones that do not exist.
- YAML 1.1 booleans and timestamps are switched off: `yes`, `no`, `on`, `off` are plain
  words (only `true`/`false` are booleans), `2026-11-24` is text, and numbers are
  accepted where text is expected. In `{...}` quote text containing `?` or `, `.

Growth path: steps form a union discriminated by their verb key (a callable
discriminator, so the JSON Schema from `Flow.model_json_schema()` is a `oneOf` of
objects each requiring its verb), every model forbids unknown keys, and the structural
walks the validators, graphs and lints need live in `Flow.links()` (targets) and
`Flow.templates()` (template sources).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal, NamedTuple, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from pydantic_core import PydanticCustomError

from ivr.flows.slots import SlotDef

# A path into the flow document, as pydantic reports it (`("steps", "menu", "next")`).
Loc: TypeAlias = tuple[str | int, ...]

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

DEFAULT_TIMEZONE = "America/New_York"


class _Model(BaseModel):
    # Flows are shared by concurrent calls, hence frozen; numbers are accepted as text
    # because YAML turns `key: 1` or `say: 42` into ints behind the author's back.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


Text = Annotated[str, Field(min_length=1)]

# A `set` or `args` value: a template (text) or a YAML literal kept as it is.
Value: TypeAlias = bool | int | float | str


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
    name: Text | None = Field(default=None, description="embedded (espeak-ng) voice, e.g. en-us")
    remote: Text | None = Field(
        default=None, description="voice for a remote synthesizer (IVR_TTS_*), e.g. alloy")
    rate: int | None = Field(default=None, ge=80, le=450, description="words per minute")


class DtmfOptions(_Model):
    """Keypad collection for an ask; unset fields are derived from the choices or slot."""

    max_digits: int | None = Field(default=None, ge=1, le=32)
    terminator: Literal["#", "*"] | None = "#"
    inter_digit_ms: int = Field(default=3000, ge=500, le=30000)


class Reprompts(_Model):
    """What to say when the caller says nothing (no_input) or nothing we know (no_match)."""

    prompts: tuple[Text, ...] = Field(default=(), description="templates")
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
    say: Text = Field(description="template")
    next: Target | None = None
    barge_in: bool = False


class AskStep(_Model):
    """A question: a menu (`choices`) or one typed answer (`slot`, then `next`)."""

    ask: Text = Field(description="template")
    choices: tuple[Choice, ...] = ()
    slot: Text | None = Field(default=None, description="name of the slot this ask fills")
    confirm: Text | None = Field(
        default=None, description="yes/no question (template) asked once the slot is filled"
    )
    next: Target | None = Field(default=None, description="after the slot is filled")
    barge_in: bool = True
    no_input: Reprompts = Reprompts()
    no_match: Reprompts = Reprompts()
    fallback: Target | None = None
    speech: bool = True
    timeout_ms: int | None = Field(default=None, ge=1000, le=60000)
    end_silence_ms: int | None = Field(default=None, ge=100, le=5000)
    max_utterance_ms: int | None = Field(default=None, ge=1000, le=60000)
    dtmf: DtmfOptions | None = None

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


class SetStep(_Model):
    set: dict[str, Value] = Field(min_length=1, description="slot name -> template or literal")
    next: Target | None = None


class BranchCase(_Model):
    if_: Text = Field(alias="if", description="condition (a Jinja expression)")
    goto: Target


class BranchStep(_Model):
    branch: tuple[BranchCase, ...] = Field(min_length=1)
    else_: Target = Field(alias="else")


class CallStep(_Model):
    call: Text = Field(description="tool name, listed in the flow's tools")
    args: dict[str, Value] = Field(default_factory=dict, description="name -> template")
    result: Text | None = Field(default=None, description="store the result as vars.<result>")
    next: Target | None = None
    on_error: Target | None = None


class LlmStep(_Model):
    llm: Text = Field(description="system prompt (template)")
    tools: tuple[Text, ...] = ()
    exit_when: tuple[Text, ...] = Field(default=(), description="conditions that end the step")
    max_rounds: int = Field(default=8, ge=1, le=50)
    next: Target | None = None
    fallback: Target = Field(description="where to go when no LLM is configured or it fails")


class TransferStep(_Model):
    transfer: Text = Field(description="phone number (template)")
    say: Text | None = Field(default=None, description="said before transferring (template)")


class HangupStep(_Model):
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

TemplateKind: TypeAlias = Literal["text", "condition", "value"]


class TemplateUse(NamedTuple):
    """One template or condition in a flow, where it is and when it is evaluated."""

    step: str
    loc: Loc
    source: str
    kind: TemplateKind  # text: rendered to words; condition: an expression; value: set/args
    after: bool = False  # evaluated after the step did its work (confirm, exit_when)


class Engines(_Model):
    """Per-flow choices among the configured remote engines (the embedded ones have none)."""

    llm_model: Text | None = Field(
        default=None, description="model for this flow's llm steps (else IVR_LLM_MODEL)")


class Flow(_Model):
    name: Text
    description: str = ""
    voice: Voice | None = None
    engines: Engines | None = None
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
