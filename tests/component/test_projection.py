"""`ivr report --project-monthly N`: a seeded mix of calls scaled to N calls a month and
priced through graduated volume tiers, checked against a computation by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ivr.analytics.pricing import Pricing, graduated
from ivr.analytics.projection import project_monthly
from ivr.analytics.report import main
from ivr.cli.main import build_parser
from ivr.errors import ConfigError
from ivr.store.db import CallStore

PRICES = """
telephony:
  round_up_minutes: true
  per_minute:
    twilio_inbound_voice: [{up_to: 100000, price: 0.01}, {price: 0.008}]
    twilio_media_streams: 0.004
stt:
  whisper-1:
    per_minute: [{up_to: 20000, price: 0.006}, {up_to: 50000, price: 0.005}, {price: 0.004}]
tts:
  tts-1:
    per_1m_chars: [{up_to: 10000000, price: 15.0}, {price: 12.0}]
llm:
  gpt-4o-mini: {prompt: 0.15, cached: 0.075, completion: 0.60}
"""

LLM = {"role": "llm", "engine": "gpt-4o-mini",
       "units": {"text_in": 2000, "cached_in": 1000, "text_out": 300, "requests": 2}}


def _usage(stt_s: float, chars: int, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    out = [{"role": "tts", "engine": "openai:tts-1", "units": {"chars": chars}}]
    if stt_s:
        out.append({"role": "stt", "engine": "openai:whisper-1", "units": {"audio_s": stt_s}})
    return out + list(extra)


# Four calls: 30 s, 90 s, 150 s, 45 s (billed 1, 2, 3, 1 minutes).
MIX = [
    (30_000, _usage(12, 400, LLM)),
    (90_000, _usage(18, 600, LLM)),
    (150_000, _usage(30, 200)),
    (45_000, _usage(0, 800, {"role": "llm", "engine": "mystery-9",
                             "units": {"text_in": 100}})),
]


@pytest.fixture
async def mixed_db(db_target: Path | str) -> Path | str:
    store = await CallStore.open(db_target)
    try:
        for i, (duration_ms, usage) in enumerate(MIX):
            sid = f"CA{i:032d}"
            await store.start_call(sid, stream_sid="MZ" + sid, account_sid="AC",
                                   from_masked="", to_masked="", flow="main")
            await store.end_call(sid, outcome="completed",
                                 stats={"duration_ms": duration_ms, "usage": usage})
    finally:
        await store.close()
    return db_target


def test_report_projects_a_month_through_the_volume_tiers(
    mixed_db: Path | str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    monkeypatch.setenv("IVR_PRICING", str(prices))
    args = build_parser().parse_args(
        ["report", "--db", str(mixed_db), "--project-monthly", "100000", "--json"])
    assert main(args) == 0
    p = json.loads(capsys.readouterr().out)["projection"]
    # By hand, for 100,000 calls a month:
    # minutes: (1 + 2 + 3 + 1) / 4 = 1.75 a call -> 175,000: voice 100,000 * 0.01 +
    #   75,000 * 0.008 = 1,600; streams 175,000 * 0.004 = 700.
    # whisper: (12 + 18 + 30 + 0) / 4 = 15 s = 0.25 min a call -> 25,000 min:
    #   20,000 * 0.006 + 5,000 * 0.005 = 145.
    # tts-1: 2,000 / 4 = 500 chars a call -> 50M chars: 10M at 15 + 40M at 12 per 1M = 630.
    # gpt-4o-mini: (2,000, 1,000, 300) * 2 / 4 a call -> 100M uncached at 0.15 = 15,
    #   50M cached at 0.075 = 3.75, 15M completion at 0.60 = 9: 27.75.
    assert p["by_provider"] == {"telephony": 2300.0, "stt:openai:whisper-1": 145.0,
                                "tts:openai:tts-1": 630.0, "llm:gpt-4o-mini": 27.75}
    assert p["total"] == 3102.75
    assert p["per_call"] == pytest.approx(3102.75 / 100_000, abs=1e-6)
    assert p["dominant"] == "telephony"
    assert p["unpriced"] == ["mystery-9"]
    assert p["observed_calls"] == 4 and p["calls_per_month"] == 100000
    args = build_parser().parse_args(
        ["report", "--db", str(mixed_db), "--project-monthly", "100000"])
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Projection: 100,000 calls a month" in text
    assert "telephony: 2,300.00 (74.1%)  <- dominant" in text
    assert "unpriced (counted at $0): mystery-9" in text


def test_one_call_is_priced_at_the_first_tier_and_tiers_only_apply_to_a_month() -> None:
    table = Pricing.load(None).table
    table["stt"]["whisper-1"] = {"per_minute": [{"up_to": 1, "price": 0.006}, {"price": 0.001}]}
    pricing = Pricing(table)
    call = {"usage": [{"role": "stt", "engine": "openai:whisper-1", "units": {"audio_s": 600}}]}
    assert pricing.cost(call)["stt:openai:whisper-1"] == 0.06  # 10 min at the first tier
    month = project_monthly(pricing, [call], 1)
    assert month["by_provider"]["stt:openai:whisper-1"] == round(0.006 + 9 * 0.001, 2)


def test_graduated_bands() -> None:
    bands = ((100.0, 1.0), (300.0, 0.5), (None, 0.25))
    assert graduated(50, bands) == 50
    assert graduated(100, bands) == 100
    assert graduated(250, bands) == 100 + 75
    assert graduated(1000, bands) == 100 + 100 + 175
    assert graduated(0, bands) == 0


@pytest.mark.parametrize("bad", [
    "[{price: 1}, {up_to: 5, price: 2}]",  # the unbounded tier is not last
    "[{up_to: 5, price: 1}, {up_to: 3, price: 2}, {price: 1}]",  # bounds do not rise
    "[{up_to: 5, price: 1}]",  # no unbounded last tier
    "cheap",
])
def test_a_broken_tier_fails_at_load_naming_the_key(tmp_path: Path, bad: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(f"stt:\n  whisper-1:\n    per_minute: {bad}\n")
    with pytest.raises(ConfigError, match=r"stt\.whisper-1\.per_minute"):
        Pricing.load(f)


def test_a_unit_without_a_rate_is_unpriced_not_free() -> None:
    """Audio tokens sent to a model whose entry has text prices only: listed unpriced."""
    cost = Pricing.load(None).cost({"usage": [
        {"role": "llm", "engine": "gpt-4o-mini", "units": {"text_in": 1000, "audio_in": 50}}]})
    assert cost["unpriced:gpt-4o-mini"] == 0.0
    assert cost["llm:gpt-4o-mini"] == 0.00015
