"""Whole calls through the real server on a loopback port, placed by the simulated caller.

Calls run in real time, so every call of this module is placed at once, concurrently,
by one module fixture; each test then checks one behaviour of the results.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from ivr.sim.run import run_call
from ivr.sim.script import Barge, CallerAction, PressKeys, Say, Silence
from tests.conftest import make_settings
from tests.e2e.placing import Placed, answered, place_calls
from tests.media_peer import LEAD_S, prompt_segments

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FRAME_S = 0.020
# Loopback and a shared 2-core machine add a little jitter to arrival times.
JITTER_S = 0.012

CALLS: dict[str, tuple[list[CallerAction], dict[str, Any]]] = {
    # Answers the embedded recognizer gets right in 15 of 15 fresh syntheses (espeak's
    # output varies run to run; "sales" in en-us only 13 of 15: see the README's figures).
    "voice_opening_hours": ([Say("opening hours")], {}),
    "voice_support_other_voice": ([Say("support")], {"voice": "en-gb"}),
    "keypad_hours": ([PressKeys("3")], {}),
    # The greeting (~1.5 s) may not be interrupted; 2.6 s in lands inside the menu prompt.
    "barge_in": ([Barge("hours", after_ms=2600)], {}),
    "no_input_then_fallback": ([Silence(5500), Silence(5500), Silence(5500)], {}),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Placed]]:
    settings = make_settings(tmp_path_factory.mktemp("e2e"))
    yield await place_calls(settings, {
        name: functools.partial(run_call, actions=actions, transcribe=False,
                                **{"flow": "demo", **options})
        for name, (actions, options) in CALLS.items()
    }, freeze_gc=True)


async def test_voice_answer_is_understood(placed: dict[str, Placed]) -> None:
    """Saying 'opening hours' at the menu takes the hours branch, and the reply is played."""
    rec = placed["voice_opening_hours"].record
    first = answered(rec)[0]
    assert first["step"] == "menu"
    assert first["input_kind"] == "speech"
    assert first["understood"] == "hours", first
    assert first["input_text"] == "opening hours"
    assert "Say sales, support, or hours" in first["prompt"]
    assert first["prompt_heard"] == "played"
    assert any("We are open nine to five" in t["prompt"] for t in rec["turns"])
    assert rec["outcome"] == "completed"


async def test_voice_answer_in_another_voice_is_understood(placed: dict[str, Placed]) -> None:
    """A caller with a British voice saying 'support' is understood too."""
    first = answered(placed["voice_support_other_voice"].record)[0]
    assert (first["input_kind"], first["understood"]) == ("speech", "support"), first


async def test_keypad_answer_is_understood(placed: dict[str, Placed]) -> None:
    """Pressing 3 at the menu takes the hours branch."""
    rec = placed["keypad_hours"].record
    first = answered(rec)[0]
    assert (first["input_kind"], first["input_text"], first["understood"]) == (
        "dtmf", "3", "hours")
    assert any("We are open nine to five" in t["prompt"] for t in rec["turns"])
    assert rec["outcome"] == "completed"


async def test_no_input_reprompts_then_falls_back(placed: dict[str, Placed]) -> None:
    """Silence gets the escalating no-input prompts, then the fallback says goodbye."""
    rec = placed["no_input_then_fallback"].record
    results = [t["result"] for t in answered(rec)]
    assert results == ["no_input", "no_input", "no_input"]
    prompts = [t["prompt"] for t in rec["turns"]]
    assert "didn't hear you" in prompts[1]
    assert prompts[-1].endswith("Goodbye.")
    assert rec["stats"]["flow_outcome"] == "fallback"


async def test_barge_in_clears_within_300_ms_of_speech_onset(placed: dict[str, Placed]) -> None:
    """Speech during the menu prompt brings a `clear` within 300 ms of its onset."""
    t = placed["barge_in"].transcript
    assert t.speech_onsets, "the caller never spoke"
    latency = t.clear_latency(t.speech_onsets[0])
    assert latency is not None, "no clear after the caller started speaking"
    assert latency < 0.300, f"clear came {latency * 1000:.0f} ms after speech onset"


async def test_barge_in_is_recorded_and_understood(placed: dict[str, Placed]) -> None:
    """The interrupted prompt is recorded as such and the interrupting answer is used."""
    first = answered(placed["barge_in"].record)[0]
    assert first["prompt_heard"] == "interrupted"
    assert 0 < first["timings"]["prompt_heard_ms"] < 6000
    assert first["understood"] == "hours", first


@pytest.mark.parametrize("name", list(CALLS))
async def test_outbound_audio_is_160_byte_frames_on_a_20_ms_clock(
    placed: dict[str, Placed], name: str
) -> None:
    """Every payload is 160 bytes; inside a prompt no burst beyond the lead, no gap > 40 ms."""
    t = placed[name].transcript
    assert t.frames, "no audio"
    assert {n for _, n in t.frames} == {160}
    for seg in prompt_segments(t):
        t0 = seg[0]
        for i, arrival in enumerate(seg):
            # Never more than the lead ahead of real time: no burst. One frame of slack:
            # these callers share the server's event loop, and a caller that reads a
            # tick late reads two ticks' frames at once (a burst its own, not sent).
            assert arrival >= t0 + (i - 1) * FRAME_S - LEAD_S - JITTER_S, (i, arrival - t0)
        gaps = [b - a for a, b in itertools.pairwise(seg)]
        assert max(gaps, default=0.0) <= 0.040 + JITTER_S, max(gaps)


@pytest.mark.parametrize("name", list(CALLS))
async def test_marks_are_echoed_and_record_lands(placed: dict[str, Placed], name: str) -> None:
    """Every mark the server sent was echoed; the call's record has an end and an outcome."""
    p = placed[name]
    assert p.transcript.marks
    assert all(m.t_echoed is not None for m in p.transcript.marks)
    assert p.transcript.closed_by == "server"
    rec = p.record
    assert rec["ended_at"] and rec["outcome"] == "completed"
    assert rec["stream_sid"] == p.transcript.stream_sid
    assert rec["from_masked"] == "+*********01"  # the last 2 digits only
    assert rec["stats"]["frames_in"] > 0
    assert rec["stats"]["late_frames"] == 0
    for turn in answered(rec):
        assert turn["timings"]["prompt_first_frame"] >= 0


@pytest.mark.parametrize("name", list(CALLS))
async def test_every_call_has_cost_and_latency_breakdowns(
    placed: dict[str, Placed], name: str
) -> None:
    """The record carries a priced cost breakdown and per-turn latencies."""
    rec = placed[name].record
    cost = rec["stats"]["cost"]
    assert cost["total"] > 0 and cost["telephony"] > 0  # minutes are never free
    assert any(k.startswith("stt:") for k in cost) or rec["stats"].get("recognitions", 0) == 0
    assert rec["stats"]["stt_engine"] == "pocketsphinx"
    timed = [t["timings"] for t in rec["turns"] if t["input_kind"] in ("speech", "dtmf")]
    for timings in timed:
        assert timings["response_ms"] > 0  # end of caller input -> first bot audio
    if rec["turns"][0]["input_kind"] == "speech":
        first = rec["turns"][0]["timings"]
        assert first["recognized"] >= first["endpoint"] >= first["speech_start"]
