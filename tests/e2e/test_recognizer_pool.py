"""A one-worker recognizer pool survives callers who never stop talking and a worker
killed mid-utterance: the next answer is still recognized (issue 10, part 4)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from ivr.grammar import Grammar
from ivr.server.app import create_app
from ivr.server.lifecycle import StartingRecognizer
from ivr.server.services import SERVICES
from ivr.sim.run import run_call
from ivr.sim.script import PutDown, Say
from ivr.speech.base import Utterance
from ivr.speech.sphinx.pool import RecognizerPool
from tests.conftest import make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

# One-second utterances and time-outs: a caller who keeps talking runs through turns fast.
FLOW = """
name: chatter
start: menu
steps:
  menu:
    ask: Say sales or support.
    choices:
      - {words: [sales], goto: sales}
      - {words: [support], goto: support}
    no_input: {prompts: ["Sorry?"], max: 6}
    no_match: {prompts: ["Sorry?"], max: 6}
    fallback: goodbye
    timeout_ms: 1000
    max_utterance_ms: 1000
  # Back to the question either way: the talker's chunks may be heard as a choice (a
  # grammar decoder ends on some phrase), and the test is about turns, not what they meant.
  sales: {say: Sales., next: menu}
  support: {say: Support., next: menu}
  goodbye: {hangup: Goodbye.}
"""
# About six seconds of continuous speech: several one-second utterances back to back,
# each barging in on the re-prompt the last one earned.
TALKER = ("the quick brown fox jumps over the lazy dog and then it runs all the way "
          "around the field again and again without ever stopping once")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestServer]:
    tmp: Path = tmp_path_factory.mktemp("pool")
    flows = tmp / "flows"
    flows.mkdir()
    (flows / "chatter.yaml").write_text(FLOW)
    # A hold far longer than the test: only the session can free a worker here.
    app = create_app(make_settings(tmp, flows=flows, default_flow="chatter",
                                   recognizer_workers=1, recognizer_hold_ms=600_000))
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


def pool_of(srv: TestServer) -> RecognizerPool:
    pool = srv.app[SERVICES].recognizer
    if isinstance(pool, StartingRecognizer):  # workers start in the background
        pool = pool.recognizer
    assert isinstance(pool, RecognizerPool)
    return pool


def turns(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    assert record is not None
    return [t for t in record["turns"] if t["input_kind"] is not None]


async def call(srv: TestServer, *actions: Say | PutDown) -> dict[str, Any] | None:
    t = await run_call(f"http://127.0.0.1:{srv.port}", list(actions), transcribe=False,
                       call_timeout=30, hangup_timeout=8)
    return t.server


async def test_a_caller_who_never_stops_talking_leaves_the_worker_free(
    server: TestServer,
) -> None:
    """Three turns and more of non-stop talking, then a hang-up: no utterance is left
    holding the only worker, and the next call's answer is recognized."""
    pool = pool_of(server)
    first = turns(await call(server, Say(TALKER), PutDown(after_ms=200)))
    assert len(first) >= 3, first
    assert pool.busy_workers == 0 and pool.queued == 0
    assert pool.stats["hold_kills"] == 0 and pool.stats["wait_expired"] == 0

    second = turns(await call(server, Say("support")))
    assert (second[0]["input_kind"], second[0]["understood"]) == ("speech", "support"), second

    # /metrics (open to this machine) shows the pool: free now, and every wait it served.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.port}/metrics") as response:
            text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["ivr_recognizer_busy_workers"].samples[0].value == 0
    waits = {s.name: s.value for s in families["ivr_recognizer_wait_seconds"].samples}
    assert waits["ivr_recognizer_wait_seconds_count"] >= len(first) + 1


async def test_a_worker_killed_mid_utterance_costs_one_turn(server: TestServer) -> None:
    """SIGKILL to the only worker while it decodes the caller: that turn is a no-match at
    once, a fresh worker is spawned, and the caller's next answer is recognized."""
    pool = pool_of(server)
    respawns = pool.stats["respawns"]

    class KillOnStart:
        """The server's recognizer, killing the worker the first utterance is given."""

        name = pool.name

        async def start(self, grammar: Grammar | None) -> Utterance:
            utterance = await pool.start(grammar)
            if pool.stats["respawns"] == respawns and pool.busy_workers:
                (pid,) = pool.worker_pids
                os.kill(pid, signal.SIGKILL)
            return utterance

    services = server.app[SERVICES]
    services.recognizer = KillOnStart()
    try:
        placed = await call(server, Say("sales"), Say("support"))
    finally:
        services.recognizer = pool
    got = turns(placed)
    assert pool.stats["respawns"] == respawns + 1
    assert got[0]["result"] == "no_match", got
    assert got[0]["timings"]["recognized"] - got[0]["timings"]["endpoint"] < 2000, got[0]
    assert (got[1]["input_kind"], got[1]["understood"]) == ("speech", "support"), got
