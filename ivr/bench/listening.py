"""A simulated caller that hears the bot the way a person does and reacts (`converse`).

The caller knows what the bot said from the server's own prompt record (`GET
/api/calls/{sid}/prompts`, behind the API token): each time a prompt's mark comes back
(the prompt has been played to the caller) the record is read for that prompt's words;
once the bot has gone quiet, the words of the prompts heard since the last answer go to
a `goals.Listener`, whose answer is said or keyed. Used by `ivr bench conversation` and by
the tests that place a call as a caller with a goal.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from ivr.bench.goals import Listener
from ivr.sim.caller import SimulatedCaller
from ivr.sim.script import CallerAction
from ivr.sim.transcript import CallTranscript, fetch_server_transcript

__all__ = ["PromptRecord", "converse"]


class PromptRecord:
    """The words of one call's prompts, by mark, read from the server as they are heard."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token
        self.texts: dict[str, str] = {}  # mark -> the prompt's words
        self.seen: set[str] = set()  # marks whose words went to the listener

    async def learn(self, call_sid: str) -> None:
        async with self.http.get(f"{self.base}/api/calls/{call_sid}/prompts",
                                 headers={"Authorization": f"Bearer {self.token}"}) as resp:
            if resp.status != 200:
                return
            body: dict[str, Any] = await resp.json()
        for p in body.get("prompts") or []:
            if p.get("mark"):
                self.texts[str(p["mark"])] = str(p.get("text") or "")

    async def watch(self, caller: SimulatedCaller) -> None:
        """Read the record each time a mark not yet read comes back, while the call is live
        (the record of an ended call has no marks)."""
        while True:
            if any(m.t_echoed is not None and m.name not in self.texts
                   for m in caller.buffer.marks):
                await self.learn(caller.transcript.call_sid)
            await asyncio.sleep(0.05)

    def new(self, marks: list[str]) -> list[str]:
        """The words of the prompts among `marks` not handed out before."""
        fresh = [m for m in marks if m not in self.seen and m in self.texts]
        self.seen.update(fresh)
        return [self.texts[m] for m in fresh]


async def converse(base: str, http: aiohttp.ClientSession, token: str, listener: Listener,
                   **caller: Any) -> CallTranscript:
    """Place a call to the server at `base` as `listener`'s caller (`caller`: the rest of
    `SimulatedCaller`'s arguments: flow, voice, from_number, ...) and return its record,
    with the server's (`CallTranscript.server`); the prompts heard after the last answer
    (a status read, the goodbye) reach the listener too."""
    record = PromptRecord(http, base, token)

    async def react(sim: SimulatedCaller) -> CallerAction | None:
        played = [m.name for m in sim.buffer.marks]  # the bot is quiet: all were heard
        if any(m not in record.texts for m in played):
            await record.learn(sim.transcript.call_sid)
        return listener.hear(record.new(played))

    sim = SimulatedCaller(base, [], session=http, react=react,
                          may_say=listener.goal.utterances(), **caller)
    watching = asyncio.create_task(record.watch(sim))
    try:
        t = await sim.run()
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    listener.hear(record.new([m.name for m in sim.buffer.marks if m.t_echoed is not None]))
    t.server = await fetch_server_transcript(http, base, t.call_sid, api_token=token)
    return t
