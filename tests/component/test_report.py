"""ivr.analytics: pricing of usage, and the report against a seeded SQLite call store."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ivr.analytics.pricing import Pricing
from ivr.analytics.report import (
    build_report,
    main,
    nearest_rank,
    parse_since,
    render_csv,
    render_text,
)
from ivr.store.db import CallStore, TurnRecord

# ---------------------------------------------------------------- pricing


def test_pricing_defaults_cost_breakdown() -> None:
    p = Pricing.load(None)
    cost = p.cost({
        "duration_ms": 45_000, "stt_engine": "pocketsphinx", "stt_audio_s": 12,
        "tts_engine": "openai:tts-1", "tts_chars": 200,
        "llm_model": "gpt-4o-mini", "llm_prompt_tokens": 1000,
        "llm_completion_tokens": 100, "llm_cached_tokens": 400,
    })
    telephony = 1 * (0.0085 + 0.004)  # 45 s rounds up to one billed minute
    tts = 200 / 1e6 * 15
    llm = (600 * 0.15 + 400 * 0.075 + 100 * 0.60) / 1e6
    assert cost["telephony"] == pytest.approx(telephony)
    assert cost["stt:pocketsphinx"] == 0.0
    assert cost["tts:openai:tts-1"] == pytest.approx(round(tts, 6))
    assert cost["llm:gpt-4o-mini"] == pytest.approx(round(llm, 6))
    assert cost["total"] == pytest.approx(round(telephony + tts + llm, 6))


def test_pricing_stt_per_minute_and_prefix_lookup() -> None:
    p = Pricing.load(None)
    cost = p.cost({"stt_engine": "openai:whisper-1", "stt_audio_s": 90})
    assert cost == {"stt:openai:whisper-1": 0.009, "total": 0.009}
    chat = p.cost({"stt_engine": "openai-audio-chat:gpt-4o-audio-preview", "stt_audio_s": 60})
    assert chat["stt:openai-audio-chat:gpt-4o-audio-preview"] > 0


def test_pricing_unknown_model_is_listed_not_fatal() -> None:
    cost = Pricing.load(None).cost({
        "llm_model": "mystery-9", "llm_prompt_tokens": 10, "tts_engine": "espeak-ng",
        "tts_chars": 500,
    })
    assert cost["unpriced:mystery-9"] == 0.0
    assert cost["tts:espeak-ng"] == 0.0
    assert cost["total"] == 0.0


def test_pricing_override_merges_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text(
        "telephony:\n  round_up_minutes: false\n  per_minute:\n    twilio_media_streams: 0\n"
        "llm:\n  mystery-9: {prompt: 1.0, completion: 2.0}\n"
    )
    monkeypatch.setenv("IVR_PRICING", str(f))
    p = Pricing.load()
    cost = p.cost({"duration_ms": 30_000, "llm_model": "mystery-9",
                   "llm_prompt_tokens": 1_000_000, "llm_completion_tokens": 1_000_000})
    assert cost["telephony"] == pytest.approx(0.5 * 0.0085)  # inbound kept, streams zeroed
    assert cost["llm:mystery-9"] == pytest.approx(3.0)
    assert p.table["llm"]["gpt-4o-mini"]["prompt"] == 0.15  # untouched defaults remain


# ---------------------------------------------------------------- report helpers


def test_nearest_rank() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([4, 1, 3, 2], 50) == 2
    assert nearest_rank([1, 2, 3, 4], 95) == 4
    assert nearest_rank(list(range(1, 101)), 99) == 99
    assert nearest_rank([7], 1) == 7


def test_parse_since() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert parse_since("7d", now=now) == datetime(2026, 11, 16, 12, tzinfo=UTC)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since(None) is None


# ---------------------------------------------------------------- seeded database

# (sid, flow, started_at, outcome, duration_ms, cost dict, last_step, turns)
# turns: (step, result, timings)
T = dict[str, float]
CALLS: list[tuple[str, str | None, str, str, int | None, dict[str, float] | None,
                  str | None, list[tuple[str, str, T]]]] = [
    ("CA1", "main", "2026-11-20T10:00:00.000+00:00", "completed", 60_000,
     {"telephony": 0.0125, "stt:pocketsphinx": 0.0, "total": 0.0125}, "bye",
     [("menu", "match", {"speech_start": 1000, "endpoint": 2000, "recognized": 2300,
                         "reply_first_frame": 2600, "response_ms": 600}),
      ("name", "no_match", {"speech_start": 4000, "endpoint": 5500, "recognized": 5600,
                            "reply_first_frame": 6500})]),
    ("CA2", "main", "2026-11-20T11:00:00.000+00:00", "completed", 90_000,
     {"telephony": 0.025, "llm:gpt-4o-mini": 0.0002, "total": 0.0252}, "bye",
     [("menu", "no_match", {"speech_start": 1000, "endpoint": 1800, "recognized": 2000,
                            "reply_first_frame": 2400, "response_ms": 600}),
      ("menu", "match", {"speech_start": 3000, "endpoint": 3700, "recognized": 3900,
                         "reply_first_frame": 4900, "response_ms": 1200})]),
    ("CA3", "main", "2026-11-21T09:00:00.000+00:00", "transferred", 120_000,
     {"telephony": 0.025, "total": 0.025}, "agent",
     [("menu", "no_input", {"prompt_first_frame": 100})]),
    ("CA4", "main", "2026-11-21T10:00:00.000+00:00", "abandoned", 20_000,
     {"telephony": 0.0125, "total": 0.0125}, "name",
     [("name", "no_match", {"speech_start": 900, "endpoint": 1900, "recognized": 2400,
                            "reply_first_frame": 2700, "response_ms": 800})]),
    ("CA5", "main", "2026-11-21T11:00:00.000+00:00", "abandoned", 10_000,
     {"telephony": 0.0125, "total": 0.0125}, "name", []),
    ("CA6", "main", "2026-11-22T08:00:00.000+00:00", "dropped", 30_000,
     None, None,
     [("menu", "no_input", {}), ("date", "no_input", {})]),
    ("CA7", "main", "2026-11-22T09:00:00.000+00:00", "failed", 40_000,
     {"telephony": 0.0125, "tts:openai:tts-1": 0.0003, "total": 0.0128}, "menu", []),
    ("CA8", "billing", "2026-11-22T10:00:00.000+00:00", "completed", 50_000,
     {"telephony": 0.0125, "total": 0.0125}, "bye",
     [("acct", "match", {"speech_start": 500, "endpoint": 1000, "recognized": 1100,
                         "reply_first_frame": 1500, "response_ms": 500})]),
    # Before the `since` used below.
    ("CA0", "main", "2026-10-01T10:00:00.000+00:00", "completed", 999_000,
     {"telephony": 9.0, "total": 9.0}, "bye", []),
]


@pytest.fixture
async def db(db_target: Path | str) -> Path | str:
    """The calls below, in a database of each back end."""
    path = db_target
    store = await CallStore.open(path)
    try:
        for sid, flow, started, outcome, dur_ms, cost, last_step, turns in CALLS:
            await store.start_call(sid, stream_sid="MZ" + sid, account_sid="AC", from_masked="",
                                   to_masked="", flow=flow, started_at=started)
            for i, (step, result, timings) in enumerate(turns):
                await store.add_turn(sid, TurnRecord(seq=i, step=step, result=result,
                                               timings=timings))
            stats: dict[str, Any] = {"duration_ms": dur_ms}
            if cost is not None:
                stats["cost"] = cost
            if last_step is not None:
                stats["last_step"] = last_step
            await store.end_call(sid, outcome=outcome, stats=stats)
        # Twilio's own duration wins over the session's stats.
        await store.call_status("CA8", status="completed", duration_s=55.0)
    finally:
        await store.close()
    return path


SINCE = datetime(2026, 11, 1, tzinfo=UTC)


def _selected(flow: str | None = None) -> list[Any]:
    return [c for c in CALLS if c[0] != "CA0" and (flow is None or c[1] == flow)]


async def test_report_counts_containment_aht(db: Path | str) -> None:
    rep = await build_report(db, since=SINCE, flow=None)
    calls = _selected()
    assert rep["calls"] == len(calls) == 8
    assert rep["outcomes"] == {"completed": 3, "transferred": 1, "abandoned": 2,
                               "dropped": 1, "failed": 1, "interrupted": 0, "shutdown": 0}
    eligible = [c for c in calls if c[3] != "dropped"]
    completed = [c for c in eligible if c[3] == "completed"]
    assert rep["containment"] == {"rate": round(len(completed) / len(eligible), 4),
                                  "completed": 3, "eligible": 7}
    durations = [55.0 if c[0] == "CA8" else c[4] / 1000 for c in calls]
    assert rep["aht_s"] == pytest.approx(statistics.fmean(durations), abs=1e-3)


async def test_report_cost(db: Path | str) -> None:
    rep = await build_report(db, since=SINCE, flow=None)
    totals = sorted(c[5]["total"] for c in _selected() if c[5] is not None)
    assert rep["cost"]["calls"] == 7
    assert rep["cost"]["p50"] == totals[math.ceil(0.5 * len(totals)) - 1] == 0.0125
    assert rep["cost"]["mean"] == pytest.approx(statistics.fmean(totals), abs=1e-6)
    assert rep["cost"]["total"] == pytest.approx(sum(totals), abs=1e-6)
    by = rep["cost"]["by_provider"]
    assert by["telephony"] == pytest.approx(0.0125 * 5 + 0.025 * 2)
    assert by["llm:gpt-4o-mini"] == pytest.approx(0.0002)
    assert by["tts:openai:tts-1"] == pytest.approx(0.0003)


def _nr(xs: list[float], p: int) -> float:
    xs = sorted(xs)
    return xs[math.ceil(p / 100 * len(xs)) - 1]


async def test_report_latency_percentiles(db: Path | str) -> None:
    rep = await build_report(db, since=SINCE, flow=None)
    timings = [t[2] for c in _selected() for t in c[7]]
    response = [t.get("response_ms", t["reply_first_frame"] - t["endpoint"])
                for t in timings if "endpoint" in t]
    recognition = [t["recognized"] - t["endpoint"] for t in timings if "endpoint" in t]
    wait = [t["endpoint"] - t["speech_start"] for t in timings if "endpoint" in t]
    assert response == [600, 1000, 600, 1200, 800, 500]  # CA1 turn 2 derived: 6500-5500
    lat = rep["latency_ms"]
    for stage, xs in (("response_ms", response), ("recognition_ms", recognition),
                      ("endpoint_wait_ms", wait)):
        assert lat[stage]["n"] == len(xs)
        for p in (50, 95, 99):
            assert lat[stage][f"p{p}"] == _nr(xs, p), (stage, p)
    assert lat["response_ms"]["p50"] == 600
    assert lat["response_ms"]["p95"] == 1200


async def test_report_steps_and_drop_off(db: Path | str) -> None:
    rep = await build_report(db, since=SINCE, flow=None)
    assert rep["no_match_steps"] == [{"step": "name", "count": 2},
                                     {"step": "menu", "count": 1}]
    assert rep["no_input_steps"] == [{"step": "menu", "count": 2},
                                     {"step": "date", "count": 1}]
    # CA4, CA5 abandoned at "name" (stats.last_step); CA6 dropped, no last_step -> last turn
    assert rep["drop_off"] == [{"step": "name", "count": 2}, {"step": "date", "count": 1}]


async def test_report_flow_and_since_filters(db: Path | str) -> None:
    billing = await build_report(db, since=None, flow="billing")
    assert billing["calls"] == 1
    assert billing["containment"]["rate"] == 1.0
    assert billing["aht_s"] == 55.0
    everything = await build_report(db, since=None, flow=None)
    assert everything["calls"] == 9
    assert everything["cost"]["total"] == pytest.approx(
        sum(c[5]["total"] for c in CALLS if c[5] is not None), abs=1e-6)
    empty = await build_report(db, since=datetime(2030, 1, 1, tzinfo=UTC), flow=None)
    assert empty["calls"] == 0
    assert empty["containment"]["rate"] is None
    assert empty["cost"]["p50"] is None
    assert "Calls: 0" in render_text(empty)


async def test_renderers(db: Path | str) -> None:
    rep = await build_report(db, since=SINCE, flow=None)
    text = render_text(rep)
    assert "Containment: 42.9% (3/7)" in text
    assert "response_ms: n=6 p50 600.0 p95 1200.0" in text
    rows = list(csv.reader(io.StringIO(render_csv(rep))))
    assert rows[0] == ["metric", "value"]
    metrics = dict((r[0], r[1]) for r in rows[1:])
    assert metrics["calls"] == "8"
    assert metrics["outcome.dropped"] == "1"
    assert metrics["cost.p50"] == "0.0125"
    assert metrics["no_match_steps.name"] == "2"
    assert all(len(r) == 2 for r in rows)


def test_main_prints_json_csv_text(
    db: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = argparse.Namespace(db=db, since="2026-11-01", flow="main", json=True, csv=False)
    assert main(ns) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calls"] == 7
    ns.json, ns.csv = False, True
    assert main(ns) == 0
    assert capsys.readouterr().out.startswith("metric,value\n")
    ns.csv = False
    assert main(ns) == 0
    assert "Outcomes:" in capsys.readouterr().out
    bad = argparse.Namespace(db=db, since="yesterday", flow=None, json=False, csv=False)
    assert main(bad) == 2
    missing = argparse.Namespace(db=tmp_path / "nope.db", since=None, flow=None,
                                 json=False, csv=False)
    assert main(missing) == 2
