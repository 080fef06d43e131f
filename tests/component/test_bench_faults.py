"""`ivr bench soak` and `ivr bench chaos`: the commands parse, the soak's verdict, a tiny soak."""

from __future__ import annotations

import re
import time

import pytest

from ivr.bench.soak import FD_SLACK, RSS_LIMIT_MB, Snapshot, soak_main, verdict
from ivr.cli.main import build_parser
from ivr.flows.load import load_flow_text


def test_soak_and_chaos_commands_parse() -> None:
    """The fault benches take their documented options, with the issue's defaults."""
    soak = build_parser().parse_args(["bench", "soak", "--calls", "6", "--concurrency", "3"])
    assert (soak.bench, soak.calls, soak.concurrency, soak.warmup) == ("soak", 6, 3, None)
    assert build_parser().parse_args(["bench", "soak"]).calls == 5000
    chaos = build_parser().parse_args(["bench", "chaos", "--calls", "2", "--drain", "4"])
    assert (chaos.bench, chaos.calls, chaos.drain) == ("chaos", 2, 4.0)


def test_soak_flow_is_a_valid_flow() -> None:
    """The flow the soak server runs loads without an error."""
    from ivr.bench.soak import SOAK_FLOW

    assert load_flow_text(SOAK_FLOW, "soak.yaml").name == "soak"


def test_soak_verdict_fails_on_growth_leaked_fds_and_a_missing_outcome() -> None:
    """Each leak the soak looks for fails it on its own; figures within the limits pass."""
    before = Snapshot(rss_mb=80.0, fds=13, tasks=5, threads=7, active_calls=0)
    same = Snapshot(rss_mb=80.0 + RSS_LIMIT_MB - 1, fds=13 + FD_SLACK, tasks=5, threads=7,
                    active_calls=0)
    assert verdict(before, same, []) == []
    grown = Snapshot(rss_mb=80.0 + RSS_LIMIT_MB, fds=13, tasks=5, threads=7, active_calls=0)
    assert "RSS grew" in verdict(before, grown, [])[0]
    leaked = Snapshot(rss_mb=80.0, fds=13 + FD_SLACK + 1, tasks=5, threads=7, active_calls=0)
    assert "descriptors not closed" in verdict(before, leaked, [])[0]
    assert "without an outcome" in verdict(before, same, ["CA1"])[0]


async def test_a_tiny_soak_passes_and_reports_every_figure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Six calls three at a time through a real server process: every record has an
    outcome, memory and descriptors are read before and after, and it says how to rerun."""
    started = time.monotonic()
    code = await soak_main(6, 3, warmup=3)
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"before: RSS [\d.]+ MB, fds \d+, asyncio tasks \d+, threads \d+", out)
    assert re.search(r"after:  RSS [\d.]+ MB, fds \d+, asyncio tasks \d+, threads \d+", out)
    assert "records: 9 of 9 calls; without an outcome: 0" in out
    assert "reproduce: ivr bench soak --calls 6 --concurrency 3" in out
    assert time.monotonic() - started < 30
