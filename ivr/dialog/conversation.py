"""A call in text: the flow engine driven by typed turns, with real tools.

`ivr chat`, `ivr flows test` and the equivalence test use this; the phone call
(`CallSession`) drives the same `FlowRunner` with the same tool execution
(`run_tool`), so a flow behaves the same typed and spoken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ivr.flows import engine
from ivr.flows.model import Flow
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry


async def run_tool(
    registry: ToolRegistry, action: engine.CallTool, ctx: ToolContext
) -> engine.ToolDone:
    """Execute a `call` step's tool; failures come back as a failed `ToolDone`, never raise."""
    result = await registry.call(action.tool, dict(action.args), ctx)
    return engine.ToolDone(ok=result.ok, value=result.value, error=result.error)


@dataclass
class Exchange:
    """What the bot said after one caller turn (or at the start), and what it did."""

    caller: str | None  # None at the start of the call
    bot: list[str] = field(default_factory=list)
    tools: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    ended: str | None = None  # hangup reason, transfer number, or goto flow


class TextConversation:
    """Drive one flow by text. `#12` presses keys 1 and 2; an empty turn is no input."""

    def __init__(
        self,
        flows: dict[str, Flow],
        flow: str,
        registry: ToolRegistry,
        *,
        db_path: Path,
        caller: str = "",
        now: Callable[[], datetime] | None = None,
        call_sid: str | None = None,
    ) -> None:
        self.flows = flows
        self.registry = registry
        self.db_path = db_path
        self.caller = caller
        self._now = now
        self.call_sid = call_sid
        self.runner = self._runner(flow)
        self.exchanges: list[Exchange] = []
        self.tool_calls: list[str] = []

    def _runner(self, name: str) -> engine.FlowRunner:
        kwargs: dict[str, Any] = {"caller": self.caller}
        if self._now is not None:
            kwargs["now"] = self._now
        return engine.FlowRunner(self.flows[name], **kwargs)

    @property
    def done(self) -> bool:
        return self.runner.done

    def _ctx(self) -> ToolContext:
        now = self._now() if self._now is not None else self.runner.now()
        return ToolContext(call_sid=self.call_sid, caller=self.caller, db_path=self.db_path,
                           now=now)

    async def start(self) -> Exchange:
        return await self._run(None, self.runner.start())

    async def turn(self, text: str) -> Exchange:
        text = text.strip()
        event: engine.Event
        if not text:
            event = engine.NoInput()
        elif text.startswith("#"):
            event = engine.Digits(text[1:].strip())
        else:
            event = engine.Speech(text)
        return await self._run(text, self.runner.handle(event))

    async def _run(self, caller: str | None, actions: list[engine.Action]) -> Exchange:
        ex = Exchange(caller)
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, engine.Play):
                ex.bot.append(action.text)
            elif isinstance(action, engine.CallTool):
                done = await run_tool(self.registry, action, self._ctx())
                ex.tools.append((action.tool, dict(action.args), done.ok))
                self.tool_calls.append(action.tool)
                queue.extend(self.runner.handle(done))
            elif isinstance(action, engine.Transfer):
                ex.ended = f"transfer {action.number}"
            elif isinstance(action, engine.GotoFlow):
                if action.name in self.flows:
                    self.runner = self._runner(action.name)
                    queue.extend(self.runner.start())
                else:
                    ex.ended = f"unknown flow {action.name}"
            elif isinstance(action, engine.Hangup):
                ex.ended = ex.ended or f"hangup ({action.reason})"
        self.exchanges.append(ex)
        return ex
