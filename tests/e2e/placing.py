"""Calls placed at once through the real server on a loopback port, for a module's tests
(`test_calls.py`, `test_barge_in_words.py`): the server is started and made ready, every
call placed concurrently, the server stopped, and each call's record read back from the
database file itself."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestServer

from ivr.config import Settings
from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.sim.transcript import CallTranscript
from ivr.store.db import CallStore

# A call, given the server's media URL (`ws://127.0.0.1:<port>/media`): its transcript.
Caller = Callable[[str], Awaitable[CallTranscript]]


@dataclass
class Placed:
    transcript: CallTranscript
    record: dict[str, Any]


def answered(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The turns of a call record that took an answer (speech or keys)."""
    return [t for t in record["turns"] if t["input_kind"] is not None]


async def place_calls(
    settings: Settings, calls: Mapping[str, Caller], *, freeze_gc: bool = False,
) -> dict[str, Placed]:
    """Place `calls` at once on a server with `settings`; each one's transcript and record
    by name. `freeze_gc`: leave the process's heap out of collections while they run."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    # Pacing is measured here, in the server's own loop: calls come once start-up work
    # (recognizer workers loading, prompts synthesized in threads) no longer shares the
    # two cores with it, as an orchestrator sends calls after /readyz.
    services = server.app[SERVICES]
    async with asyncio.timeout(60):
        while not services.ready:  # noqa: ASYNC110 - a flag the app sets, no event to await
            await asyncio.sleep(0.05)
        if services.prewarming is not None:
            await services.prewarming
    url = f"ws://127.0.0.1:{server.port}/media"
    if freeze_gc:
        # These calls share pytest's process, whose heap holds everything the suite made
        # before them: a full collection walking it stalled every call at once for
        # ~165 ms in full-suite runs. Frozen, that heap is left out of collections while
        # they run.
        gc.collect()
        gc.freeze()
    try:
        transcripts = await asyncio.gather(*(call(url) for call in calls.values()))
    finally:
        if freeze_gc:
            gc.unfreeze()
        await server.close()
    # The record is read from the database file itself, after the server has stopped.
    store = await CallStore.open(settings.db)
    try:
        records = [await store.get_call(t.call_sid) for t in transcripts]
    finally:
        await store.close()
    out = {}
    for name, transcript, record in zip(calls, transcripts, records, strict=True):
        assert record is not None, f"{name}: no call record"
        out[name] = Placed(transcript, record)
    return out
