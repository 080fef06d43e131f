"""`ivr bench latency`'s measurements, on hand-made transcripts (the benchmark itself runs
against a server process and is not part of the tests)."""

from __future__ import annotations

import pytest

from ivr.bench.latency import (
    ANSWER_CASES,
    ANSWERS_FLOW,
    barge_in,
    ended_complete,
    heard,
    percentile,
    stage_ms,
    understood,
    voice_to_voice,
)
from ivr.flows.load import load_flow_text
from ivr.flows.slots import grammar_for
from ivr.sim.transcript import CallerSaid, CallTranscript


def transcript() -> CallTranscript:
    t = CallTranscript(call_sid="CA1", stream_sid="MZ1", account_sid="AC1", flow="demo")
    t.frames = [(0.10, 160), (0.12, 160), (2.40, 160), (2.42, 160), (5.00, 160)]
    t.events = [CallerSaid("sales", 1.50, 2.00, 1.52),
                CallerSaid("hours", 3.00, 3.80, 3.05, barge=True)]
    t.clears = [1.0, 3.30]
    return t


def test_voice_to_voice_is_last_loud_frame_to_the_first_reply_frame() -> None:
    [(said, ms)] = voice_to_voice(transcript())
    assert said == "sales" and ms == pytest.approx(400)


def test_barge_in_is_first_voiced_frame_to_the_next_clear() -> None:
    [(said, ms)] = barge_in(transcript())
    assert said == "hours" and ms == pytest.approx(250)


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_understood_counts_matched_speech_turns_in_the_servers_record() -> None:
    record: dict[str, object] = {"turns": [
        {"input_kind": "speech", "result": "match"},
        {"input_kind": "speech", "result": "no_match"},
        {"input_kind": "dtmf", "result": "match"},
    ]}
    assert understood(record) == (1, 2)
    assert understood(None) == (0, 0)


def test_turns_ended_complete_come_from_the_call_stats() -> None:
    assert ended_complete({"stats": {"turns_ended_complete": 2}}) == 2
    assert ended_complete({"stats": {}}) == 0 and ended_complete(None) == 0


def test_the_bench_flow_asks_a_number_and_a_full_time() -> None:
    """Its answers are JSGF ones, the kind grammar-aware endpointing walks."""
    flow = load_flow_text(ANSWERS_FLOW, "bench_answers.yaml")
    assert flow.name == "bench_answers"
    assert {s.type for s in flow.slots.values()} == {"number", "time"}
    assert all(grammar_for(s).jsgf is not None for s in flow.slots.values())
    assert all(len(said) == 2 for f, said in ANSWER_CASES if f == flow.name)


def test_stages_come_from_the_servers_turn_timings() -> None:
    record: dict[str, object] = {"turns": [
        {"input_kind": "speech", "timings": {
            "caller_speech_end": 2000.0, "caller_endpoint": 2260.0,
            "endpoint": 2250.0, "recognized": 2256.0, "reply_first_frame": 2257.0}},
        {"input_kind": "speech", "timings": {  # its reply never played out
            "caller_speech_end": 4000.0, "caller_endpoint": 4600.0,
            "endpoint": 4590.0, "recognized": 4630.0}},
        {"input_kind": "dtmf", "timings": {"digits_done": 10.0}},
    ]}
    assert stage_ms(record) == [
        {"end of voice -> endpoint": 260.0, "endpoint -> recognized": 6.0,
         "recognized -> first reply frame": 1.0},
        {"end of voice -> endpoint": 600.0, "endpoint -> recognized": 40.0},
    ]
    assert stage_ms(None) == []


def test_heard_is_the_recognized_text_of_each_speech_turn() -> None:
    record: dict[str, object] = {"turns": [
        {"input_kind": "speech", "input_text": "fifty"},
        {"input_kind": "dtmf", "input_text": "12"},
        {"input_kind": "speech", "input_text": None},
    ]}
    assert heard(record) == ["fifty", ""]
