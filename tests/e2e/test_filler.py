"""A slow tool never leaves the caller in silence: a filler plays once the filler delay
(`IVR_FILLER_AFTER_MS`, 1.5 s by default; 50 ms here) passes without a result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.session.call import FILLERS
from ivr.sim.run import run_call
from ivr.speech.base import Synthesizer
from ivr.tools.base import Tool, ToolContext
from tests.conftest import make_settings

FLOW = """
name: slow
start: hello
tools: [test.slow]
steps:
  hello: {say: Hello., next: look}
  look: {call: test.slow, args: {}, result: r, next: done}
  done: {hangup: Done.}
"""


class _Watching:
    """The server's synthesizer, noting when the first filler starts being spoken."""

    def __init__(self, inner: Synthesizer) -> None:
        self.inner = inner
        self.name = inner.name
        self.filler_spoken = asyncio.Event()

    def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        if text == FILLERS[0]:
            self.filler_spoken.set()
        return self.inner.synthesize(text, voice=voice, rate=rate)


async def test_slow_tool_gets_a_filler_prompt(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "slow.yaml").write_text(FLOW)
    app = create_app(make_settings(tmp_path, flows=flows, default_flow="slow",
                                   filler_after_ms=50))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        services = app[SERVICES]
        assert services.tools is not None and services.synthesizer is not None
        watching = _Watching(services.synthesizer)
        services.synthesizer = watching

        async def slow(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
            # Slow until the caller is hearing the first filler, then done: exactly one.
            await watching.filler_spoken.wait()
            return {"ok": True}

        services.tools.register(Tool(name="test.slow", description="slow", handler=slow,
                                     parameters={"type": "object", "properties": {}},
                                     timeout_s=5))
        t = await run_call(f"ws://127.0.0.1:{server.port}/media", [], transcribe=False,
                           call_timeout=30)
    finally:
        await server.close()
    assert t.server is not None
    prompts = " ".join(turn["prompt"] for turn in t.server["turns"])
    assert "One moment, please." in prompts
    assert t.server["stats"]["fillers"] == 1
    assert prompts.index("One moment") < prompts.index("Done.")
