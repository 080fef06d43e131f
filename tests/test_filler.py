"""A slow tool never leaves the caller in silence: a filler plays after 1.5 s."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.sim.run import run_call
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


async def _slow(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    await asyncio.sleep(2.5)
    return {"ok": True}


async def test_slow_tool_gets_a_filler_prompt(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "slow.yaml").write_text(FLOW)
    app = create_app(make_settings(tmp_path, flows=flows, default_flow="slow"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        tools = app[SERVICES].tools
        assert tools is not None
        tools.register(Tool(name="test.slow", description="sleeps", handler=_slow,
                            parameters={"type": "object", "properties": {}}, timeout_s=5))
        t = await run_call(f"ws://127.0.0.1:{server.port}/media", [], transcribe=False,
                           call_timeout=30)
    finally:
        await server.close()
    assert t.server is not None
    prompts = " ".join(turn["prompt"] for turn in t.server["turns"])
    assert "One moment, please." in prompts
    assert t.server["stats"]["fillers"] == 1
    assert prompts.index("One moment") < prompts.index("Done.")
