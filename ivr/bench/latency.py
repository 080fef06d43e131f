"""`ivr bench latency`: what a caller waits for, through a real server process.

Voice-to-voice: from the end of the caller's speech (the moment the simulated caller sent
its last loud frame) to the first frame of the reply, over spoken answers of the shipped
flows (their menus, a slot after one, an order number) and of a flow of the bench's own
that asks a number and a time (`ANSWER_CASES`), in several espeak voices. Barge-in: from the
caller's first voiced frame, spoken over a prompt, to the `clear` the server sends.

The server is `ivr serve` in its own process (`ServerProcess`), with the embedded engines
(pocketsphinx, espeak-ng); the callers are `ivr.sim` callers in this process, which
answer a prompt once it has gone quiet (`Say`) or speak over it (`Barge`), and record
every arrival time. `--complete-ms 0` runs the server without grammar-aware endpointing
(`IVR_ENDPOINT_COMPLETE_MS`), the baseline the default is compared with; `--barge-in
words` with word-gated barge-in (`IVR_BARGE_IN`), whose price is the barge-in figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from ivr.bench.server import ServerProcess
from ivr.sim.caller import SimulatedCaller
from ivr.sim.script import Barge, CallerAction, PutDown, Say
from ivr.sim.transcript import CallerSaid, CallTranscript, fetch_server_transcript

__all__ = ["ANSWERS_FLOW", "ANSWER_CASES", "CASES", "latency_main", "percentile"]

# (flow, what the caller says to its prompts in turn): each menu choice's first word, and
# a choice slot reached through a menu. Replies here are prompts, not tool calls, so the
# figure is the turn-taking, not a webhook.
CASES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("main_menu", ("appointments",)),
    ("main_menu", ("orders",)),
    ("main_menu", ("agent",)),
    ("demo", ("sales",)),
    ("demo", ("support",)),
    ("demo", ("hours",)),
    ("dental_booking", ("book", "cleaning")),
    ("dental_booking", ("book", "filling")),
)
# Structured answers, voice-to-voice only (their prompts are too short to barge into):
# a digit string (order_status), and a number up to 99 and a time in the full JSGF
# grammar (`ANSWERS_FLOW`), which grammar-aware endpointing walks (`ivr.jsgf`) to tell
# "twenty two" (complete) from "twenty" (may go on). None of the shipped flows asks a
# number, and their dates and times are phrase lists.
ANSWER_CASES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("order_status", ("one two three four",)),
    ("bench_answers", ("twenty two", "ten a m")),
    ("bench_answers", ("seven", "three thirty p m")),
    ("bench_answers", ("fifteen", "noon")),
)
ANSWERS_FLOW: Final = """\
name: bench_answers
description: A number, then a time, for ivr bench latency.
start: how_many
slots:
  party: {type: number, min: 1, max: 99}
  time: {type: time, grammar: full}
steps:
  how_many:
    ask: How many people?
    slot: party
    next: what_time
  what_time:
    ask: What time?
    slot: time
    next: bye
  bye:
    hangup: Thank you. Goodbye.
"""
# A barge-in lands this long after the prompt's first audio: inside the menu prompt.
BARGE_AFTER_MS: Final = 2500
BARGE_HANGUP_MS: Final = 1500


@dataclass(frozen=True, slots=True)
class Sample:
    flow: str
    voice: str
    said: str
    ms: float


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (of a few dozen samples p99 is the largest but one or so)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def voice_to_voice(t: CallTranscript) -> list[tuple[str, float]]:
    """(what was said, ms from its last loud frame to the first reply frame) per answer."""
    out = []
    arrivals = [when for when, _ in t.frames]
    for event in t.events:
        if isinstance(event, CallerSaid) and not event.barge:
            reply = next((a for a in arrivals if a > event.t_end), None)
            if reply is not None:
                out.append((event.text, (reply - event.t_end) * 1000))
    return out


def understood(record: dict[str, object] | None) -> tuple[int, int]:
    """(speech turns the flow matched, speech turns) in the server's record of a call: a
    turn ended too early would show as a no-match here."""
    turns = record.get("turns") if record is not None else None
    if not isinstance(turns, list):
        return 0, 0
    spoken = [t for t in turns if isinstance(t, dict) and t.get("input_kind") == "speech"]
    return sum(1 for t in spoken if t.get("result") == "match"), len(spoken)


def heard(record: dict[str, Any] | None) -> list[str]:
    """What the server recognized in each speech turn of a call, in order."""
    turns = record.get("turns") if record is not None else None
    return [str(t.get("input_text") or "") for t in turns if isinstance(t, dict)
            and t.get("input_kind") == "speech"] if isinstance(turns, list) else []


def _squash(text: str) -> str:
    """Letters and digits only: "ten a.m." and "ten a m" are the same answer."""
    return "".join(c for c in text.lower() if c.isalnum())


def ended_complete(record: dict[str, Any] | None) -> int:
    """Speech turns of a call that ended on the short silence of a complete answer."""
    stats = record.get("stats") if record is not None else None
    count = stats.get("turns_ended_complete", 0) if isinstance(stats, dict) else 0
    return count if isinstance(count, int) else 0


# The server's side of a voice-to-voice figure, from its turn timings: the endpointer's
# wait after the last voiced audio (caller clock, VAD hangover included), the recognizer's
# final result after the end-of-speech decision, and the reply's first frame after that.
STAGES: Final = (
    ("end of voice -> endpoint", "caller_speech_end", "caller_endpoint"),
    ("endpoint -> recognized", "endpoint", "recognized"),
    ("recognized -> first reply frame", "recognized", "reply_first_frame"),
)


def stage_ms(record: dict[str, Any] | None) -> list[dict[str, float]]:
    """Per speech turn of a call: {stage: ms} over the `STAGES` its timings have (a
    reply's first frame is recorded only once the reply has played)."""
    turns = record.get("turns") if record is not None else None
    out = []
    for turn in turns if isinstance(turns, list) else []:
        timings = turn.get("timings") if isinstance(turn, dict) else None
        if not isinstance(timings, dict) or turn.get("input_kind") != "speech":
            continue
        values = {name: timings[b] - timings[a] for name, a, b in STAGES
                  if isinstance(timings.get(a), int | float)
                  and isinstance(timings.get(b), int | float)}
        out.append(values)
    return out


def _summary(ms: Sequence[float]) -> str:
    return (f"n={len(ms)} p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
            f"max {max(ms, default=float('nan')):.0f} ms")


def barge_in(t: CallTranscript) -> list[tuple[str, float]]:
    """(what was said, ms from its first voiced frame to the next `clear`) per barge-in."""
    out = []
    for event in t.events:
        if isinstance(event, CallerSaid) and event.barge and event.onset is not None:
            latency = t.clear_latency(event.onset)
            if latency is not None:
                out.append((event.text, latency * 1000))
    return out


async def _call(url: str, flow: str, voice: str, actions: list[CallerAction],
                session: aiohttp.ClientSession) -> CallTranscript:
    caller = SimulatedCaller(url, actions, flow=flow, voice=voice, session=session,
                             call_timeout=90.0)
    return await caller.run()


async def latency_main(voices: list[str], *, concurrency: int = 2, workers: int = 2,
                       complete_ms: int | None = None, barge_in_mode: str | None = None,
                       keep: Path | None = None) -> int:
    """`keep`: run in that folder and leave the server's debug log and database there."""
    env = {"IVR_RECOGNIZER_WORKERS": str(workers), "IVR_MAX_LOOP_LAG_MS": "0"}
    if keep is not None:
        env["IVR_LOG_LEVEL"] = "debug"
        os.makedirs(keep, exist_ok=True)
    if complete_ms is not None:
        env["IVR_ENDPOINT_COMPLETE_MS"] = str(complete_ms)
    if barge_in_mode is not None:
        env["IVR_BARGE_IN"] = barge_in_mode
    v2v: list[Sample] = []
    barges: list[Sample] = []
    missing: list[str] = []
    matched = [0, 0]  # speech turns understood, speech turns
    early: dict[str, list[int]] = {}  # flow -> [turns ended on the short silence, turns]
    stages: dict[bool, list[dict[str, float]]] = {False: [], True: []}  # structured?
    # said -> [heard as said, heard otherwise, what instead]: the structured answers
    # (menu answers map to choices with other words, and `understood` counts those).
    misheard: dict[str, list[Any]] = {s: [0, 0, []] for _, said in ANSWER_CASES for s in said}
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    folder = (contextlib.nullcontext(str(keep)) if keep is not None
              else tempfile.TemporaryDirectory())
    with folder as tmp:
        flows = Path(tmp) / "flows"  # the shipped flows and the bench's own
        shutil.copytree(os.environ.get("IVR_FLOWS", "flows"), flows, dirs_exist_ok=True)
        (flows / "bench_answers.yaml").write_text(ANSWERS_FLOW, "utf-8")
        env["IVR_FLOWS"] = str(flows)
        server = ServerProcess(Path(tmp) / "latency.db", env, log=Path(tmp) / "server.log")
        async with aiohttp.ClientSession() as http:
            await server.start(http, max_wait=60)
            try:
                async def one(flow: str, voice: str, said: tuple[str, ...], barge: bool) -> None:
                    actions: list[CallerAction] = (
                        [Barge(said[0], BARGE_AFTER_MS)] if barge else [Say(s) for s in said])
                    # After a barge-in the hang-up waits for a `clear` that comes late
                    # (word-gated: at the end of the speech).
                    actions.append(PutDown(after_ms=BARGE_HANGUP_MS if barge else 100))
                    async with gate:
                        t = await _call(server.base, flow, voice, actions, http)
                    found = barge_in(t) if barge else voice_to_voice(t)
                    record = await fetch_server_transcript(http, server.base, t.call_sid)
                    ok, turns = understood(record)
                    matched[0] += ok
                    matched[1] += turns
                    if not barge:
                        counts = early.setdefault(flow, [0, 0])
                        counts[0] += ended_complete(record)
                        counts[1] += turns
                        stages[flow in {f for f, _ in ANSWER_CASES}].extend(stage_ms(record))
                        if flow in {f for f, _ in ANSWER_CASES}:
                            for text, got in zip(said, heard(record), strict=False):
                                misheard[text][0 if _squash(text) == _squash(got) else 1] += 1
                                if _squash(text) != _squash(got):
                                    misheard[text][2].append(got)
                    into = barges if barge else v2v
                    into.extend(Sample(flow, voice, text, ms) for text, ms in found)
                    expected = 1 if barge else len(said)
                    if len(found) < expected:
                        kind = "no clear" if barge else "no reply"
                        missing.append(f"{flow}/{voice}/{' '.join(said)}: {kind} "
                                       f"{'; '.join(t.errors)}".rstrip())

                await asyncio.gather(*(
                    one(flow, voice, said, barge)
                    for barge in (False, True)
                    for flow, said in (CASES if barge else CASES + ANSWER_CASES)
                    for voice in voices
                ))
            finally:
                await server.stop()
    elapsed = time.perf_counter() - started
    setting = ", ".join(
        ([] if complete_ms is None else [f"IVR_ENDPOINT_COMPLETE_MS={complete_ms}"])
        + ([] if barge_in_mode is None else [f"IVR_BARGE_IN={barge_in_mode}"])
    ) or "server default"
    cases = len(CASES) + len(ANSWER_CASES)
    print(f"ivr bench latency: {cases} answers x voices {', '.join(voices)} "
          f"({setting}; {workers} recognizer workers, {concurrency} calls at a time; "
          f"{elapsed:.0f} s)")
    for name, samples in (("voice-to-voice (last loud caller frame -> first reply frame)", v2v),
                          ("barge-in (caller's first voiced frame -> clear)", barges)):
        print(f"{name}: {_summary([s.ms for s in samples])}")
        if samples is v2v:
            structured = {flow for flow, _ in ANSWER_CASES}
            for part, kind in (("menus and choices", False), ("numbers, times, digits", True)):
                part_ms = [s.ms for s in v2v if (s.flow in structured) == kind]
                print(f"  {part}: {_summary(part_ms)}")
                for stage, _, _ in STAGES:
                    print(f"    {stage:32} " + _summary(
                        [t[stage] for t in stages[kind] if stage in t]))
        by_word: dict[str, list[float]] = {}
        for s in samples:
            by_word.setdefault(f"{s.flow}/{s.said}", []).append(s.ms)
        for key, values in by_word.items():
            print(f"  {key:32} p50 {percentile(values, 50):5.0f} ms  "
                  f"max {max(values):5.0f} ms  (n={len(values)})")
    for line in missing:
        print(f"  MISSING {line}")
    print(f"answers understood by the flow (server's record): {matched[0]}/{matched[1]}")
    right = sum(r for r, _, _ in misheard.values())
    wrong_n = sum(w for _, w, _ in misheard.values())
    print(f"numbers, times, digits recognized as said: {right}/{right + wrong_n}"
          + "".join(f"; {said!r} heard as {', '.join(repr(x) for x in wrong)}"
                    for said, (_, _, wrong) in misheard.items() if wrong))
    print("speech turns ended on the short silence (complete for the grammar): " + ", ".join(
        f"{flow} {done}/{turns}" for flow, (done, turns) in early.items()))
    command = f"ivr bench latency --voices {','.join(voices)}"
    if complete_ms is not None:
        command += f" --complete-ms {complete_ms}"
    if barge_in_mode is not None:
        command += f" --barge-in {barge_in_mode}"
    print(f"reproduce: {command}")
    if keep is not None:
        print(f"server log and database kept in {keep}")
    return 0 if v2v and not missing else 1
