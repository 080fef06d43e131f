"""Readiness and the drain: `/readyz`, `/media` refused while draining, `drain()`."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestServer

from ivr.config import Settings
from ivr.server.app import create_app
from ivr.server.lifecycle import SHUTDOWN_PROMPT_S, drain
from ivr.server.services import SERVICES, Services
from ivr.sim.dial import dial, voice_form
from ivr.sim.transcript import new_sid
from ivr.telephony import inbound
from tests.media_peer import closed_with


async def _get(server: TestServer, path: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{server.port}{path}"
    ) as resp:
        return resp.status, await resp.json()


async def test_readyz_is_200_once_started_and_503_while_draining(server: TestServer) -> None:
    """Flows loaded, store open, workers up: ready; draining: not ready, /healthz still up."""
    services = server.app[SERVICES]
    assert services.workers_starting is not None
    await services.workers_starting
    assert await _get(server, "/readyz") == (200, {"ready": True})
    services.draining = True
    assert await _get(server, "/readyz") == (503, {"ready": False,
                                                   "waiting_for": ["not_draining"]})
    status, _ = await _get(server, "/healthz")
    assert status == 200


async def test_start_up_does_not_wait_for_the_recognizer_workers(settings: Settings) -> None:
    """The server answers before its workers are up: /healthz 200, /readyz 503 until
    they are; a recognition started meanwhile waits for them."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        services = server.app[SERVICES]
        starting = services.workers_starting
        assert starting is not None and not starting.done()
        assert (await _get(server, "/healthz"))[0] == 200
        status, body = await _get(server, "/readyz")
        assert status == 503 and body["waiting_for"] == ["recognizer"]
        assert services.recognizer is not None
        utterance = await asyncio.wait_for(services.recognizer.start(None), 30)
        assert starting.done() and services.recognizer_ready
        await utterance.cancel()
        assert (await _get(server, "/readyz"))[0] == 200
    finally:
        await server.close()


async def test_a_new_media_stream_is_refused_while_draining(server: TestServer) -> None:
    """Refused before the upgrade (503), counted."""
    services = server.app[SERVICES]
    services.draining = True
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"ws://127.0.0.1:{server.port}/media")
    assert refused.value.status == 503
    assert services.counters["refused.draining"] == 1


async def test_a_stream_upgraded_before_the_drain_does_not_start_a_call(
    server: TestServer,
) -> None:
    """The socket was accepted, then SIGTERM came, then its `start`: refused (1013, try
    again later), counted; no call, no record."""
    services = server.app[SERVICES]
    base = f"http://127.0.0.1:{server.port}"
    call_sid = new_sid("CA")
    async with aiohttp.ClientSession() as http, http.ws_connect(base + "/media") as ws:
        dialled = await dial(http, base, voice_form(call_sid, "AC1", "+15550100001",
                                                    "+15550100002"))
        services.draining = True
        await ws.send_str(inbound.start_message(1, "MZ1", "AC1", call_sid, dialled.parameters))
        async with asyncio.timeout(10):
            assert await closed_with(ws) == WSCloseCode.TRY_AGAIN_LATER
    assert services.counters["refused.draining"] == 1
    assert services.calls == {} and "calls_started" not in services.counters
    assert services.store is not None
    assert await services.store.get_call(call_sid) is None


class FakeCall:
    """A `LiveCall` that ends when told to, or when the server shuts it down (its prompt
    playing until cancelled when `held`)."""

    def __init__(self, services: Services, sid: str, *, held: bool = False) -> None:
        self.services = services
        self.stream_sid = sid
        self.held = held
        self.budgets: list[float] = []
        self.ends: list[str] = []
        self.shutting = asyncio.Event()
        services.calls[sid] = self

    async def end(self, reason: str) -> None:
        if not self.ends:  # idempotent, as CallSession.end is
            self.ends.append(reason)
        self.services.calls.pop(self.stream_sid, None)

    async def shut_down(self, *, budget_s: float) -> None:
        self.budgets.append(budget_s)
        self.shutting.set()
        if self.held and budget_s > 0:
            await asyncio.Event().wait()
        await self.end("shutdown")


@pytest.fixture
def services(settings: Settings) -> Services:
    return Services(settings=settings)


async def test_drain_lets_calls_that_end_in_time_finish_as_they_would(
    services: Services,
) -> None:
    call = FakeCall(services, "MZ1")
    hurry = asyncio.Event()
    task = asyncio.create_task(drain(services, drain_s=5.0, hurry=hurry))
    await asyncio.sleep(0)
    assert services.draining
    await call.end("hangup")
    await asyncio.wait_for(task, 1.0)
    assert call.ends == ["hangup"] and call.budgets == []


async def test_drain_ends_calls_still_live_at_the_deadline_with_the_prompt(
    services: Services,
) -> None:
    calls = [FakeCall(services, f"MZ{i}") for i in range(3)]
    await asyncio.wait_for(drain(services, drain_s=0.05, hurry=asyncio.Event()), 1.0)
    assert all(c.budgets[0] == SHUTDOWN_PROMPT_S for c in calls)
    assert all(c.ends == ["shutdown"] for c in calls) and not services.calls


async def test_hurry_cuts_the_wait_and_the_prompt(services: Services) -> None:
    """A second signal during the prompt: every call ends at once, as `shutdown`."""
    calls = [FakeCall(services, f"MZ{i}", held=True) for i in range(2)]
    hurry = asyncio.Event()
    task = asyncio.create_task(drain(services, drain_s=0.0, hurry=hurry))
    await asyncio.wait_for(asyncio.gather(*(c.shutting.wait() for c in calls)), 1.0)
    hurry.set()
    await asyncio.wait_for(task, 1.0)  # not the prompt's 3.5 s
    assert all(c.ends == ["shutdown"] and c.budgets[-1] == 0 for c in calls)
    assert not services.calls


async def test_hurry_before_the_deadline_skips_the_prompt(services: Services) -> None:
    calls = [FakeCall(services, "MZ1")]
    hurry = asyncio.Event()
    hurry.set()
    await asyncio.wait_for(drain(services, drain_s=30.0, hurry=hurry), 1.0)
    assert set(calls[0].budgets) == {0.0} and calls[0].ends == ["shutdown"]
