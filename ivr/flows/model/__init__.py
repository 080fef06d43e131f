"""The call-flow language: pydantic models of one YAML flow file.

A flow is a named graph of steps. Each step does exactly one thing, and the thing it
does is named by its *verb* key, so a step reads like a sentence. A complete flow
(every key shown; the `# yaml-language-server` line lets an editor autocomplete and
check the file against `flows/schema.json`, which `python -m ivr.flows.schema` writes)::

    # yaml-language-server: $schema=schema.json
    name: booking                     # required; how calls and other flows refer to it
    description: Book a table.        # optional, for people
    voice: {name: en-us, rate: 165}   # optional synthesizer voice and words per minute
    engines:                          # optional; this flow's choice of remote engines
      llm_model: gpt-4o-mini          #   its llm steps' model (else IVR_LLM_MODEL)
      llm_mode: realtime              #   pipeline | audio | realtime (else IVR_LLM_MODE)
      realtime_model: gpt-realtime    #   (else IVR_REALTIME_MODEL)
      barge_in: words                 #   what cuts a prompt: vad (any speech) or words
                                      #   (only speech that is a word) (else IVR_BARGE_IN)
    timezone: America/New_York        # optional IANA zone of `now` and of dates said
    certainty: {confidence: 0.05, margin: 0.1, commit_confidence: 0.07, commit_margin: 0.25}
                                      # optional; when a voice answer is sure (defaults shown)
    start: greet                      # required; the step the call begins with
    on_error: sorry                   # optional; where a failed tool or template goes
    tools: [bookings.find, bookings.book]   # the tools `call` steps may use
    slots:                            # typed answers the flow collects (ivr/flows/slots/)
      day: {type: date, description: the day of the visit}
      time: {type: time}
      party: {type: number, min: 1, max: 12}
      name: {type: text}
      seating:
        type: choice
        choices:
          - {value: inside, words: [inside, indoors], key: "1"}
          - {value: terrace, words: [terrace, patio], key: "2"}  # not "outside": like "inside"
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
        verify: auto                    # optional; check unsure voice answers: auto|always|never
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
- `expect` (a slot ask) narrows what the recognizer listens for to the values offered:
  a template giving a list of values of the slot's type (`"{{ vars.free.available }}"`:
  times "HH:MM"; ISO dates; choice values; digit strings; numbers), each heard in the
  ways people say it (14:30: "two thirty", "two thirty p.m.", "half past two"). Keys
  and typed answers are read as before. When it renders to nothing, to no value of the
  slot, or fails, the step listens with the slot's normal grammar (trace
  `expect_fallback`); other slot types ignore it.
- Never act on a guess (`verify`, default `auto`): a voice answer under the flow's
  `certainty` (confidence, or margin to the next-best hypothesis when the recognizer
  gives one) is checked first ("Cleaning, right? Say yes or no, or press 1 for yes, 2
  for no."); no asks again (a no-match), yes or key 1 takes it. `always` checks every
  voice answer, `never` none; keys and (under `auto`) free-speech `text` slots are never
  checked; an unsure yes/no answer is asked for by keys ("Press 1 for yes, 2 for no.").
  An answer whose `next` (or `goto`) runs a committing tool (its name's last part has
  book, cancel, reschedule, pay, refund or delete) before the next question needs
  `commit_confidence` and `commit_margin` whatever `verify` says; a spoken yes that
  falls short gets "Press 1 to confirm, 2 to change." and only keys answer it. README
  "Never act on a guess" has the measurements behind the defaults.
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

This package is the bottom of `ivr.flows` (it imports nothing else from it): `base`
(what every model shares), `slots` (slot definitions), `steps` (one model per verb and
the targets between them), `flow` (the whole file). Import from `ivr.flows.model`.
"""

from __future__ import annotations

from ivr.flows.model.base import FlowModel, Loc, Text, Value
from ivr.flows.model.flow import (
    DEFAULT_TIMEZONE,
    Certainty,
    Engines,
    Flow,
    TemplateKind,
    TemplateUse,
    Voice,
)
from ivr.flows.model.slots import SLOT_TYPES, ChoiceOption, SlotDef, SlotType
from ivr.flows.model.steps import (
    STEP_KIND_ERROR,
    STEP_TAGS,
    STEP_VERBS,
    TARGET_FLOW_TAG,
    TARGET_KIND_ERROR,
    TARGET_STEP_TAG,
    UNION_TAGS,
    AnyStep,
    AskStep,
    BranchCase,
    BranchStep,
    CallStep,
    Choice,
    DtmfOptions,
    FlowRef,
    HangupStep,
    LlmStep,
    Reprompts,
    SayStep,
    SetStep,
    Step,
    Target,
    TransferStep,
    step_verb,
)

__all__ = [
    "DEFAULT_TIMEZONE",
    "SLOT_TYPES",
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
    "Certainty",
    "Choice",
    "ChoiceOption",
    "DtmfOptions",
    "Engines",
    "Flow",
    "FlowModel",
    "FlowRef",
    "HangupStep",
    "LlmStep",
    "Loc",
    "Reprompts",
    "SayStep",
    "SetStep",
    "SlotDef",
    "SlotType",
    "Step",
    "Target",
    "TemplateKind",
    "TemplateUse",
    "Text",
    "TransferStep",
    "Value",
    "Voice",
    "step_verb",
]
