"""Out-of-grammar rejection by a likelihood ratio against a free phone loop (issue 15):
measured, not shipped.

    PYTHONPATH=. .venv/bin/python -m tests.bench_oog_ratio [--out rows.jsonl]   # repo root

A benchmark, not a test: it prints figures and asserts nothing about them. Each utterance
goes through the phone path (espeak -> 8 kHz µ-law -> the call's endpointer -> 16 kHz) and
is decoded as the recognition worker decodes it (a lean decoder, the step's grammar, band
fill in 100 ms blocks from the same seed); the same band-filled audio is then decoded again
by pocketsphinx's allphone search (a free loop of context-independent phones, uniform phone
probabilities) on the same decoder, from the same cepstral mean. Both `hyp().score`s are
exp(log score) in logbase 1.0001 and on one scale: the grammar's (fsg with bestpath) is the
sum of its path's acoustic link scores, <s> and <sil> included (the lattice *segments'*
`ascore` are shifted left 10 bits and underflow to 0.0 on long words, so the path score is
the one to use); the loop's is the sum of its segments' acoustic scores. The test statistic
is the per-frame gap `(loop - grammar) / frames`: speech that fits the grammar should score
close to the loop, speech that does not much worse.

Cases (voices en-gb-x-rp and en-us+f2 deliberately not used):
- real answers, clean: `flows/dental_booking.yaml`'s own words (en-us, en-gb), its answers
  as people say them (`--phrasings people`: en-us, en-gb, en-us+m3; their 3 nonsense
  answers per step count as nonsense), `flows/demo.yaml` (4 voices), `flows/main_menu.yaml`
  and `flows/order_status.yaml` (en-us, en-gb): the sets of `ivr bench accuracy`;
- nonsense: "pizza", "banana", "hello", "what's the weather like", "i want a refund for my
  shoes" in en-us, en-gb, en-us+m3, en-us+f3 against every speech step of dental_booking,
  demo, main_menu and order_status;
- real answers in white line noise 15 dB below the speech (`ivr.sim.voice.LineNoise`), on
  the line before, during and after the answer: dental_booking own words and people's
  phrasings, demo, first two voices of each.

For each threshold, set where it loses 0, 2, 5, 10 of the clean real answers understood
today, it prints how much nonsense is a no-match (today's decoder already finds no complete
path for some: those count as rejected) and how many noisy real answers would be lost.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ivr.audio.codec import frames, to_ulaw8k
from ivr.bench.accuracy import _answers, _grammar, _understood, endpoint_line, endpointed
from ivr.flows.load import load_flow
from ivr.flows.model import AskStep
from ivr.grammar import Grammar
from ivr.sim.voice import LineNoise
from ivr.speech.espeak import synthesize_blocking
from ivr.speech.sphinx.decoding import (
    PHONE_CMN,
    Job,
    Slot,
    band_fill,
    make_full_decoder,
    make_lean_decoder,
)
from ivr.speech.sphinx.grammar import CompiledGrammar, compile_grammar
from ivr.speech.sphinx.model import load_vocabulary
from ivr.speech.sphinx.wire import BLOCK_BYTES

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("America/New_York"))
SETS = (  # name, flow, voices, phrasings
    ("dental_own", "flows/dental_booking.yaml", ("en-us", "en-gb"), "flow"),
    ("people", "flows/dental_booking.yaml", ("en-us", "en-gb", "en-us+m3"), "people"),
    ("demo", "flows/demo.yaml", ("en-us", "en-gb", "en-us+m3", "en-us+f3"), "flow"),
    ("main_menu", "flows/main_menu.yaml", ("en-us", "en-gb"), "flow"),
    ("order_status", "flows/order_status.yaml", ("en-us", "en-gb"), "flow"),
)
NONSENSE = ("pizza", "banana", "hello", "what's the weather like",
            "i want a refund for my shoes")
NONSENSE_VOICES = ("en-us", "en-gb", "en-us+m3", "en-us+f3")
NOISY_SETS = ("dental_own", "people", "demo")
NONSENSE_FLOWS = ("dental_own", "demo", "main_menu", "order_status")
SNR_DB = 15.0
_LN_BASE = math.log(1.0001)  # pocketsphinx's default logbase


def _log(x: float) -> float:
    return math.log(x) / _LN_BASE if x > 0 else -math.inf


def noisy_endpointed(speech: bytes) -> bytes:
    """`endpointed` with white line noise `SNR_DB` below the speech, silence included."""
    speech_frames = frames(speech)
    noise = LineNoise.below([speech_frames], SNR_DB)
    line = ([noise.frame() for _ in range(50)] + noise.mix(speech_frames)
            + [noise.frame() for _ in range(75)])
    return endpoint_line(line)


class Scorer:
    """A worker's lean decoder with an allphone search beside the grammars."""

    def __init__(self) -> None:
        self.slot = Slot(make_lean_decoder(), lexicon=make_full_decoder())
        self.slot.decoder.add_allphone_file("allphone", None)
        self.vocabulary = load_vocabulary()
        self._compiled: dict[str, CompiledGrammar] = {}

    def compiled(self, grammar: Grammar) -> CompiledGrammar:
        key = repr(grammar)
        if key not in self._compiled:
            self._compiled[key] = compile_grammar(grammar, self.vocabulary)
        return self._compiled[key]

    def score(self, grammar: Grammar, audio: bytes) -> dict[str, Any]:
        if len(audio) < BLOCK_BYTES:  # the endpointer heard nothing
            return {"hyp": None}
        compiled = self.compiled(grammar)
        job = Job(1, compiled.jsgf)
        self.slot.begin(job)
        decoder, filled = self.slot.decoder, bytearray()
        started = time.process_time()
        for i in range(0, len(audio), BLOCK_BYTES):
            block = band_fill(audio[i : i + BLOCK_BYTES], job.rng)
            filled += block
            decoder.process_raw(block, False, False)
        decoder.end_utt()
        hyp = decoder.hyp()
        row: dict[str, Any] = {"frames": decoder.n_frames(),
                               "grammar_ms": 1000 * (time.process_time() - started)}
        row["hyp"] = hyp.hypstr if hyp is not None else None
        row["grammar_score"] = _log(hyp.score) if hyp is not None else None
        row["confidence"] = hyp.prob if hyp is not None else None
        row["match"] = compiled.match(hyp.hypstr) if hyp is not None else None
        started = time.process_time()
        decoder.activate_search("allphone")
        decoder.set_cmn(PHONE_CMN)
        decoder.start_utt()
        decoder.process_raw(bytes(filled), False, True)
        decoder.end_utt()
        loop = decoder.hyp()
        row["loop_ms"] = 1000 * (time.process_time() - started)
        row["loop_score"] = _log(loop.score) if loop is not None else None
        row["loop_phones"] = loop.hypstr if loop is not None else None
        return row


def _audio(text: str, voice: str, noisy: bool) -> bytes:
    pcm, rate = synthesize_blocking(text, voice)
    ulaw = to_ulaw8k(pcm, rate)
    return noisy_endpointed(ulaw) if noisy else endpointed(ulaw)


def collect(scorer: Scorer) -> list[dict[str, Any]]:
    rows = []
    for name, path, voices, phrasings in SETS:
        flow = load_flow(Path(path))
        for step_name, step in flow.steps.items():
            if not isinstance(step, AskStep) or not step.speech:
                continue
            grammar = _grammar(flow, step, NOW)
            try:
                scorer.compiled(grammar)
            except ValueError:
                continue  # free speech (a name): no grammar to reject with
            people = step_name if phrasings == "people" else None
            answers = _answers(flow, step, NOW, people=people)
            cases = [(name, said, meant, v, False) for said, meant in answers for v in voices]
            if name in NOISY_SETS:
                cases += [(name + "_noise", said, meant, v, True)
                          for said, meant in answers if meant for v in voices[:2]]
            if name in NONSENSE_FLOWS:
                cases += [("nonsense", said, "", v, False)
                          for said in NONSENSE for v in NONSENSE_VOICES]
            for group, said, meant, voice, noisy in cases:
                row = scorer.score(grammar, _audio(said, voice, noisy))
                understood = _understood(flow, step, row.get("match") or "", NOW)
                row.update(group=group, flow=path, step=step_name, said=said, meant=meant,
                           voice=voice, ok=understood == meant)
                rows.append(row)
    return rows


def gap(row: dict[str, Any]) -> float | None:
    """(phone loop - grammar) log score per frame; None when the grammar found no path."""
    if row.get("grammar_score") is None or row.get("loop_score") is None:
        return None
    return float(row["loop_score"] - row["grammar_score"]) / float(row["frames"])


def report(rows: list[dict[str, Any]]) -> None:
    real = [r for r in rows if r["meant"] and not r["group"].endswith("_noise")]
    noisy = [r for r in rows if r["group"].endswith("_noise")]
    nonsense = [r for r in rows if not r["meant"]]
    kept = sorted(g for r in real if r["ok"] and (g := gap(r)) is not None)

    def rejected(r: dict[str, Any], t: float) -> bool:
        g = gap(r)
        return g is not None and g > t

    print(f"clean real answers understood today: {sum(r['ok'] for r in real)}/{len(real)}; "
          f"noisy: {sum(r['ok'] for r in noisy)}/{len(noisy)}; nonsense already a no-match: "
          f"{sum(r['ok'] for r in nonsense)}/{len(nonsense)}")
    for lost in (0, 2, 5, 10):
        t = kept[-1 - lost]
        out = sum(r["ok"] or rejected(r, t) for r in nonsense)
        noisy_lost = sum(r["ok"] and rejected(r, t) for r in noisy)
        print(f"  reject gap > {t:5.1f}/frame: clean real lost {lost:2d}, nonsense a no-match "
              f"{out}/{len(nonsense)} = {100 * out / len(nonsense):.0f} %, noisy real lost "
              f"{noisy_lost}")
    print("per step: gap of clean real answers understood | of nonsense the grammar accepted")
    steps = sorted({(r["flow"], r["step"]) for r in rows})
    for flow, step in steps:
        ok = sorted(g for r in real if (r["flow"], r["step"]) == (flow, step) and r["ok"]
                    and (g := gap(r)) is not None)
        bad = sorted(g for r in nonsense if (r["flow"], r["step"]) == (flow, step)
                     and not r["ok"] and (g := gap(r)) is not None)
        if ok and bad:
            print(f"  {Path(flow).stem:15} {step:15} real median {ok[len(ok) // 2]:5.1f} max "
                  f"{ok[-1]:5.1f} | nonsense min {bad[0]:5.1f} median {bad[len(bad) // 2]:5.1f}")
    grammar_ms = sorted(r["grammar_ms"] for r in rows if "grammar_ms" in r)
    loop_ms = sorted(r["loop_ms"] for r in rows if "loop_ms" in r)
    print(f"CPU per utterance (median, {len(loop_ms)} utterances): grammar decode "
          f"{grammar_ms[len(grammar_ms) // 2]:.0f} ms, allphone pass "
          f"{loop_ms[len(loop_ms) // 2]:.0f} ms (p90 {loop_ms[int(0.9 * len(loop_ms))]:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write one JSON row per utterance here")
    parser.add_argument("--rows", help="report on rows written earlier instead of decoding")
    args = parser.parse_args()
    if args.rows:
        rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines()]
    else:
        rows = collect(Scorer())
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    report(rows)
    print("reproduce: PYTHONPATH=. .venv/bin/python -m tests.bench_oog_ratio")


if __name__ == "__main__":
    main()
