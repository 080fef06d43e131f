"""`ivr bench accuracy`: how often the embedded recognizer understands a flow's answers.

Each expected answer of each `ask` step is spoken by the embedded synthesizer in every
voice given and sent through the same path as a phone call: 8 kHz µ-law in 20 ms frames
with (digital) silence around it, decoded, endpointed by the call's `Endpointer` (preroll
included), upsampled to 16 kHz by the per-call streaming resampler, recognized with the
step's grammar (narrowed as its `expect` says, over `SAMPLE_VARS`; `--expect off`: the
slot's whole grammar, same answers), and matched to a choice by the flow's own matcher.
It prints every answer, a table per ask step (what it listens for, answers understood,
out-of-grammar answers rejected), the decoding CPU per answer, and the command that
reproduces the run (`IVR_SPHINX_CONFIG` included: decoder settings to measure,
`ivr.speech.sphinx.decoding`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from ivr.audio.codec import ULAW_SILENCE, Upsampler, frames, to_ulaw8k, ulaw_to_pcm16
from ivr.audio.endpoint import EndpointConfig, Endpointer, SpeechEnded, SpeechStarted
from ivr.flows.engine.collection import narrowed
from ivr.flows.load import load_flow
from ivr.flows.model import AskStep, Flow
from ivr.flows.slots import COMPACT_DATE_PHRASES, grammar_for, parse_text
from ivr.flows.templates import TemplateContext, TemplateFailure, jsonable, render_value
from ivr.flows.text import match_choice, menu_grammar
from ivr.grammar import Grammar
from ivr.speech.espeak import EspeakSynthesizer
from ivr.speech.sphinx.decoding import SPHINX_CONFIG_ENV
from ivr.speech.sphinx.pool import RecognizerPool
from ivr.tools.builtin.availability import SLOTS


def endpointed(speech: bytes) -> bytes:
    """The 16 kHz audio a call would send to the recognizer for `speech` (µ-law)."""
    return endpoint_line(frames(ULAW_SILENCE * 8000 + speech + ULAW_SILENCE * 12000))


def endpoint_line(line: Iterable[bytes]) -> bytes:
    """The 16 kHz audio of the first utterance the call's endpointer finds in `line` (20 ms
    µ-law frames: silence or noise around speech), preroll included, upsampled per call."""
    endpointer, up, out = Endpointer(), Upsampler(), bytearray()
    endpointer.arm(EndpointConfig(), 0)
    for i, frame in enumerate(line):
        pcm = ulaw_to_pcm16(frame)
        event = endpointer.process(pcm, i * 20)
        if isinstance(event, SpeechStarted):
            out += up.process(event.preroll)
        elif endpointer.in_speech:
            out += up.process(pcm)
        elif isinstance(event, SpeechEnded):
            out += up.flush()
            break
    return bytes(out)


# `--phrasings people` (issue 15): answers to `flows/dental_booking.yaml` as callers say
# them, carrier words included, and what the flow must understand ("" : nothing, a no-match).
# The second line of each step: what `ivr bench conversation` callers said and were
# misheard saying (its MISSED lines); `ask_order` is `flows/order_status.yaml`'s order
# number.
PEOPLE: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "menu": (("i'd like to book", "book"), ("a new appointment please", "book"),
             ("i want to cancel", "cancel"), ("i need to reschedule", "reschedule"),
             ("i'd like to cancel", "cancel"), ("book an appointment", "book")),
    "ask_service": (("a cleaning please", "cleaning"), ("a checkup", "checkup"),
                    ("whitening please", "whitening"), ("a filling", "filling"),
                    ("a checkup please", "checkup")),
    "ask_day": (("on wednesday", "wednesday"), ("on tuesday", "tuesday"),
                ("next friday please", "next friday"), ("it's monday", "monday"),
                ("on thursday", "thursday"), ("thursday", "thursday")),
    "ask_time": (("at two p m", "14:00"), ("at ten a m", "10:00"),
                 ("at eleven thirty", "11:30"), ("at three p m please", "15:00"),
                 ("at three p m", "15:00")),
    "confirm": (("yes please", "yes"), ("that's right", "yes"),
                ("yes that's right", "yes"), ("no thanks", "no"),
                ("that is right", "yes"), ("no that is wrong", "no")),
    "ask_order": (("it is six zero two one", "6021"),
                  ("my order number is one two three four", "1234"),
                  ("it is nine four zero two", "9402"), ("it is two eight one nine", "2819"),
                  ("my order number is zero three five one", "0351"),
                  ("the number is four four one two", "4412"), ("it's five one five zero", "5150"),
                  ("one two three four", "1234"), ("five one five zero", "5150"),
                  ("nine four zero two", "9402"), ("two eight one nine", "2819"),
                  ("zero three five one", "0351"), ("three nine nine zero", "3990")),
}
# Out-of-grammar answers: each must be understood as nothing (a no-match), never a choice.
NONSENSE: Final = ("pizza", "banana", "what's the weather like")


# What the bench assumes an ask's `expect` offers (it runs no tools): an empty day of the
# seeded practice, every half hour from 09:00 to 16:30 free (`vars.free.available`).
SAMPLE_VARS: Final[dict[str, object]] = {"free": {"available": list(SLOTS)}}


def _expected(flow: Flow, step: AskStep, now: datetime) -> Grammar | None:
    """The step's grammar narrowed to its `expect` rendered over `SAMPLE_VARS`, or None."""
    if step.expect is None or step.slot is None:
        return None
    context = TemplateContext(vars=SAMPLE_VARS, now=now)
    try:
        raw = jsonable(render_value(step.expect, context))
    except TemplateFailure:
        return None
    return narrowed(flow.slots[step.slot], raw, now=now)


def _answers(flow: Flow, step: AskStep, now: datetime, people: str | None = None
             ) -> list[tuple[str, str]]:
    """(what a caller says, what the flow should understand) for one ask step: for a step
    with `expect`, a sample of the ways to say the values offered."""
    if people is not None:  # the step's name
        if people not in PEOPLE:
            return []
        return [(said, _meaning(flow, step, said, now, expected)) for said, expected in
                PEOPLE.get(people, ())] + [(said, "") for said in NONSENSE]
    if step.slot is None:
        return [(phrase, c.label) for c in step.choices for phrase in c.words]
    slot = flow.slots[step.slot]
    expected = _expected(flow, step, now)
    phrases = (expected or grammar_for(slot)).phrases
    if slot.type == "date" and slot.grammar == "compact" and expected is None:
        phrases = COMPACT_DATE_PHRASES  # the bare words, not the "on ..." ones
    if slot.type in ("date", "time"):
        phrases = phrases[::4]  # a sample across the compact grammar
    out = []
    for phrase in phrases[:SLOT_SAMPLES]:
        value = parse_text(slot, phrase, now=now)
        if value is not None:
            out.append((phrase, value.text))
    return out


def _meaning(flow: Flow, step: AskStep, said: str, now: datetime, expected: str) -> str:
    """`expected` as the flow reports it: a date answer as the parser dates it on `now`."""
    if step.slot is not None and flow.slots[step.slot].type == "date":
        value = parse_text(flow.slots[step.slot], expected, now=now)
        return value.text if value is not None else expected
    return expected


def _grammar(flow: Flow, step: AskStep, now: datetime, expect: bool = True) -> Grammar:
    """What the step listens for: with `expect`, narrowed as its `expect` says."""
    if step.slot is None:
        return menu_grammar(step) or Grammar()
    expected = _expected(flow, step, now) if expect else None
    return expected or grammar_for(flow.slots[step.slot])


def _understood(flow: Flow, step: AskStep, text: str, now: datetime) -> str | None:
    if not text:
        return ""
    if step.slot is None:
        choice = match_choice(text, step.choices)
        return choice.label if choice is not None else None
    value = parse_text(flow.slots[step.slot], text, now=now)
    return value.text if value is not None else None


SLOT_SAMPLES = 12


def _kind(flow: Flow, step: AskStep) -> str:
    """What a step listens for: its slot's type (yes/no, digits, date, ...) or `choices`."""
    return flow.slots[step.slot].type if step.slot is not None else "choices"


def slot_table(flow: Flow, results: list[tuple[str, str, bool]]) -> list[str]:
    """Per ask step (step, kind, answers understood, out-of-grammar answers rejected) from
    (step, expected answer, hit) rows; `expected` "" is an answer that must be a no-match."""
    tally: dict[str, list[int]] = {}
    for name, expected, hit in results:
        row = tally.setdefault(name, [0, 0, 0, 0])
        at = 2 if expected == "" else 0
        row[at] += hit
        row[at + 1] += 1
    out = [f"  {'step':16} {'kind':10} {'answers':>14} {'rejected':>14}"]
    for name, (ok, n, rej, m) in tally.items():
        step = flow.steps[name]
        assert isinstance(step, AskStep)
        out.append(f"  {name:16} {_kind(flow, step):10} {_ratio(ok, n):>14} {_ratio(rej, m):>14}")
    return out


def _ratio(ok: int, n: int) -> str:
    return f"{ok}/{n} {100 * ok / n:3.0f}%" if n else "-"


async def accuracy_main(
    flow_path: str, voices: list[str], workers: int = 2, repeat: int = 1,
    phrasings: str = "flow", expect: bool = True,
) -> int:
    flow = load_flow(Path(flow_path))
    synth = EspeakSynthesizer()
    now = datetime.now(ZoneInfo(flow.timezone))
    cases: list[tuple[str, str, str, str]] = []  # step, voice, phrase, expected answer
    for name, step in flow.steps.items():
        if not isinstance(step, AskStep) or not step.speech:
            continue
        people = name if phrasings == "people" else None
        for phrase, expected in _answers(flow, step, now, people=people):
            for voice in voices:
                # espeak's output differs slightly on every synthesis: repeat to see it.
                cases.extend([(name, voice, phrase, expected)] * repeat)
    ok = 0
    lines: list[str] = []
    results: list[tuple[str, str, bool]] = []
    cpu = audio = 0.0
    started = time.perf_counter()
    async with RecognizerPool(size=workers) as pool:
        for name, voice, phrase, label in cases:
            step = flow.steps[name]
            assert isinstance(step, AskStep)
            pcm, rate = b"", 0
            async for chunk, chunk_rate in synth.synthesize(phrase, voice=voice):
                pcm, rate = pcm + chunk, chunk_rate
            utt = await pool.start(_grammar(flow, step, now, expect))
            utt.feed(endpointed(to_ulaw8k(pcm, rate)))
            rec = await utt.finish()
            hit = _understood(flow, step, rec.text, now) == label
            ok += hit
            results.append((name, label, hit))
            cpu, audio = cpu + rec.cpu_seconds, audio + rec.audio_seconds
            lines.append(f"  {'ok ' if hit else 'MISS'} {voice:10} {phrase!r:20} -> {rec.text!r}")
    elapsed = time.perf_counter() - started
    print(f"flow {flow.name}: {len(cases)} answers x voices {', '.join(voices)}")
    print("\n".join(lines))
    print("\n".join(slot_table(flow, results)))
    if cases:
        print(f"decoding: {1000 * cpu / len(cases):.0f} ms CPU per answer, real-time factor "
              f"{cpu / audio if audio else 0.0:.3f} ({audio:.0f} s of audio)")
    pct = 100 * ok / len(cases) if cases else 0.0
    overrides = os.environ.get(SPHINX_CONFIG_ENV, "")
    env = f"{SPHINX_CONFIG_ENV}={overrides!r} " if overrides else ""
    print(f"understood {ok}/{len(cases)} = {pct:.0f}% through 8 kHz µ-law "
          f"({elapsed:.1f} s; reproduce: {env}ivr bench accuracy --flow {flow_path} "
          f"--voices {','.join(voices)}" + (f" --repeat {repeat}" if repeat > 1 else "")
          + (f" --phrasings {phrasings}" if phrasings != "flow" else "")
          + ("" if expect else " --expect off") + ")")
    if any(isinstance(s, AskStep) and s.expect is not None for s in flow.steps.values()):
        print(f"steps with expect: vars.free.available = every half hour {SLOTS[0]}-{SLOTS[-1]} "
              f"(an empty seeded day); {'narrowed' if expect else 'NOT narrowed (--expect off)'}")
    return 0
