"""The server as an orchestrator sees it: readiness (`/readyz`) and the graceful drain.

`/healthz` says the process is alive; `/readyz` says it should be sent calls: 200 once
the flows are loaded, the store is open and the recognizer workers are up, 503 before
that and from the moment a drain starts. Start-up waits on nothing slow: the workers
start in the background (`StartingRecognizer`), prompts prewarm in the background.

`ivr serve` runs the app under `serve` rather than `web.run_app`: aiohttp's own signal
handling raises `GracefulExit` and then cancels the request handlers, so every live
call would end as dropped. Here SIGTERM starts a drain instead:

1. `services.draining` is set: `/readyz` answers 503 and no new call starts;
2. live calls go on until they end or `drain_s` passes;
3. calls still live then hear `SHUTDOWN_PROMPT` (within `SHUTDOWN_PROMPT_S`) and end
   with outcome `shutdown`; the app's cleanup writes every record;
4. the process exits 0.

A second SIGTERM, or a SIGINT at any time (Ctrl-C), skips what is left of the wait and
of the prompt: the calls end at once, their records still written.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

import structlog
from aiohttp import web

from ivr.grammar import Grammar
from ivr.server.services import SERVICES, Services
from ivr.speech.base import Recognizer, Utterance

__all__ = ["SHUTDOWN_PROMPT_S", "StartingRecognizer", "drain", "readyz", "serve"]

log = structlog.get_logger("ivr.server.lifecycle")

# The prompt is ~3 s of speech at the default rate; with the drain's time this stays
# inside the 5 s an orchestrator's grace period should leave past IVR_DRAIN_S.
SHUTDOWN_PROMPT_S = 3.5
# Calls leave `services.calls` from several places (the handler, the call's own end);
# looking ten times a second costs nothing and keeps them free of a drain hook.
_POLL_S = 0.1
# After the calls have ended their sockets are closed; a handler still running then is
# stuck on a peer, not on our work.
_HANDLER_GRACE_S = 2.0


class StartingRecognizer:
    """A `Recognizer` whose workers are still starting (`starting`): `start()` waits for
    them. Loading the models takes a second or two, more on a busy machine, and must not
    hold `/healthz` back; a call placed meanwhile hears its greeting and waits, if at
    all, at its first answer. A start that failed fails each utterance with its error."""

    def __init__(self, recognizer: Recognizer, starting: asyncio.Task[None]) -> None:
        self.recognizer = recognizer
        self.name = recognizer.name
        self._starting = starting

    async def start(self, grammar: Grammar | None) -> Utterance:
        # shield: a call that stops waiting must not cancel the workers' start.
        await asyncio.shield(self._starting)
        return await self.recognizer.start(grammar)


async def readyz(request: web.Request) -> web.Response:
    """200 when this process should be sent calls, else 503 with what it is waiting for."""
    services = request.app[SERVICES]
    if services.ready:
        return web.json_response({"ready": True})
    waiting = [name for name, ok in (
        ("flows", bool(services.flows)), ("store", services.store is not None),
        ("recognizer", services.recognizer_ready), ("not_draining", not services.draining),
    ) if not ok]
    return web.json_response({"ready": False, "waiting_for": waiting}, status=503)


async def drain(services: Services, *, drain_s: float, hurry: asyncio.Event) -> None:
    """Refuse new calls, let live ones finish for up to `drain_s`, then end the rest with
    the shutdown prompt (none once `hurry` is set)."""
    services.draining = True
    started = time.monotonic()
    log.info("drain_started", calls=len(services.calls), drain_s=drain_s)
    deadline = started + drain_s
    while services.calls and not hurry.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), min(_POLL_S, deadline - time.monotonic()))
    left = list(services.calls.values())
    if left:
        budget = 0.0 if hurry.is_set() else SHUTDOWN_PROMPT_S
        log.info("drain_ending_calls", calls=len(left), prompt=budget > 0)
        endings = [asyncio.create_task(call.shut_down(budget_s=budget)) for call in left]
        hurried = asyncio.create_task(hurry.wait())
        try:
            pending: set[asyncio.Task[object]] = set(endings)
            while pending and not hurry.is_set():
                _, pending = await asyncio.wait({*pending, hurried},
                                                return_when=asyncio.FIRST_COMPLETED)
                pending.discard(hurried)
        finally:
            hurried.cancel()
            for task in endings:
                task.cancel()
            await asyncio.gather(hurried, *endings, return_exceptions=True)
        # shut_down is idempotent: a call whose prompt a second signal cut short ends
        # now without it, its record written and its socket closed.
        await asyncio.gather(*(call.shut_down(budget_s=0) for call in left),
                             return_exceptions=True)
    log.info("drain_done", ended=len(left), s=round(time.monotonic() - started, 2))


async def serve(
    app: web.Application, host: str, port: int, *, print: Callable[[str], None],
    reuse_port: bool = False, ready: Callable[[], None] | None = None,
) -> None:
    """Run `app` until SIGTERM (drain first) or SIGINT (end calls at once); return when
    every call has ended and the app is cleaned up. `reuse_port`: share the port with
    the other processes of `ivr serve --processes N` (SO_REUSEPORT); `ready` is called
    once the port is open (the supervisor waits for it)."""
    services = app[SERVICES]
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=_HANDLER_GRACE_S)
    await runner.setup()
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_sigterm() -> None:
        if stop.is_set():
            hurry.set()
        # At once, before the drain task runs: /readyz is 503 from this moment.
        services.draining = True
        stop.set()

    def on_sigint() -> None:
        services.draining = True
        stop.set()
        hurry.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        if ready is not None:
            ready()
        print(f"======== Running on {site.name} ========\n(SIGTERM drains, Ctrl-C ends calls)")
        await stop.wait()
        log.info("shutdown_signal", hurry=hurry.is_set())
        await drain(services, drain_s=services.settings.drain_s, hurry=hurry)
    finally:
        await runner.cleanup()
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
        log.info("server_stopped")
