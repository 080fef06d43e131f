"""The one driver of a flow's actions, for a phone call and a text conversation alike.

A `FlowRunner` is pure: events in, actions out. Something has to carry the actions out
(speak a prompt, take an answer, run a tool or an `llm` step, transfer, switch flows,
hang up) and feed the results back. `Dialog` is that loop, written once. What differs
between a phone call and `ivr chat` (audio, barge-in and fillers, or printed lines) sits
behind `DialogPort`, which `session.call.CallSession` and
`dialog.conversation.TextConversation` implement: a flow behaves the same typed and
spoken, `llm` steps included.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import structlog

from ivr.dialog.agent_step import ModelFor, run_llm_step
from ivr.dialog.port import DialogPort, ToolRun
from ivr.flows import engine
from ivr.flows.model import Flow
from ivr.llm.client import AudioOut
from ivr.phone import caller_identity
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry

Log = structlog.typing.FilteringBoundLogger


async def run_tool(
    registry: ToolRegistry, action: engine.CallTool, ctx: ToolContext
) -> engine.ToolDone:
    """Execute a `call` step's tool; failures come back as a failed `ToolDone`, never raise."""
    result = await registry.call(action.tool, dict(action.args), ctx)
    return engine.ToolDone(ok=result.ok, value=result.value, error=result.error)


class Dialog:
    """Runs a flow's actions over a `DialogPort` until the flow ends or the caller leaves.

    `flows` gives the flows a `goto flow` may switch to (a server's reload replaces
    them); `model` picks the chat model of an `llm` step (None: no LLM, the runner takes
    each `llm` step's fallback). `caller` is the verified caller ID (withheld or not a
    number: an anonymous caller). `stats` and `labels` collect usage for a call record;
    `llm_max_tokens_per_call` (0: no limit) bounds the tokens of all its `llm` steps.
    """

    def __init__(
        self,
        port: DialogPort,
        flows: Callable[[], Mapping[str, Flow]],
        flow: Flow,
        tools: ToolRegistry,
        *,
        caller: str,
        call_sid: str | None,
        db_path: Path | str,
        model: ModelFor | None = None,
        now: Callable[[], datetime] | None = None,
        stats: Counter[str] | None = None,
        labels: dict[str, str] | None = None,
        log: Log | None = None,
        llm_max_tokens_per_call: int = 0,
        llm_mode: str = "pipeline",
        llm_voice: str = "alloy",
    ) -> None:
        self.port = port
        self.llm_mode = llm_mode  # a flow's `engines.llm_mode` wins
        self.llm_voice = llm_voice
        self.flows = flows
        self.tools = tools
        # One identity for the flow (`{{ caller }}`) and its tools: the number as tools
        # store it, or "" when the caller ID is withheld or not a number at all.
        self.caller = caller_identity(caller)
        self.call_sid = call_sid
        self.db_path = db_path
        self.model = model
        self.llm_max_tokens_per_call = llm_max_tokens_per_call
        self._now = now
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.labels: dict[str, str] = labels if labels is not None else {}
        self.log: Log = log if log is not None else structlog.get_logger("ivr.dialog")
        self.flow = flow
        self.runner = self._new_runner()
        self.ended: str | None = None  # how: "hangup (completed)", "transfer +1555...", ...

    def _new_runner(self) -> engine.FlowRunner:
        self._logged = 0  # how much of the runner's trace `_log_trace` has looked at
        return engine.FlowRunner(self.flow, caller=self.caller, now=self._now,
                                 agent=self.model is not None)

    def tool_context(self) -> ToolContext:
        return ToolContext(call_sid=self.call_sid, caller=self.caller, db_path=self.db_path,
                           now=self.runner.now())

    async def run(self) -> None:
        port = self.port
        actions: deque[engine.Action] = deque(self.runner.start())
        while actions and not port.gone:
            action = actions.popleft()
            if isinstance(action, engine.Play):
                nxt = next((a for a in actions if not isinstance(a, engine.Play)), None)
                then = actions[0] if actions and isinstance(actions[0], engine.Play) else None
                await port.say(action, leads_to=nxt if isinstance(nxt, engine.Listen) else None,
                               then=then.text if then is not None else None)
            elif isinstance(action, engine.Listen):
                self._log_trace()
                answer = await port.ask(action)
                actions.extend(self.runner.handle(answer))
                port.answered(self.runner.turns[-1] if self.runner.turns else None)
            elif isinstance(action, engine.GotoFlow):
                flow = self.flows().get(action.name)
                if flow is None:
                    self.log.error("goto_unknown_flow", flow=action.name)
                    self.ended = f"unknown flow {action.name}"
                    break
                self.flow = flow
                self.runner = self._new_runner()
                actions.extend(self.runner.start())
            elif isinstance(action, engine.CallTool):
                actions.extend(self.runner.handle(await self._call_tool(action)))
            elif isinstance(action, engine.RunAgent):
                assert self.model is not None  # the runner emits RunAgent only then
                mode = self.mode()
                engines = self.flow.engines
                done = None
                if mode == "realtime":
                    done = await port.realtime_step(
                        action, self.runner, self.tools, self.tool_context,
                        engines.realtime_model if engines is not None else None)
                if done is None:
                    done = await run_llm_step(
                        action, self.runner, self.model(self.flow), self.tools, port,
                        self.tool_context, stats=self.stats, labels=self.labels, log=self.log,
                        max_tokens_per_call=self.llm_max_tokens_per_call,
                        audio=AudioOut(self.llm_voice) if mode == "audio" else None)
                actions.extend(self.runner.handle(done))
            elif isinstance(action, engine.Transfer):
                self.ended = f"transfer {action.number}"
                await port.transfer(action.number)
                break
            elif isinstance(action, engine.Hangup):
                self.ended = self.ended or f"hangup ({action.reason})"
                break

    def _log_trace(self) -> None:
        """Log what the runner noted that an operator should hear of: an ask's `expect`
        that gave nothing to listen for (the step then listened for any value)."""
        trace = self.runner.trace
        for note in trace[self._logged:]:
            if note.kind == "expect_fallback":
                self.log.warning("expect_fallback", step=note.step, reason=note.detail)
        self._logged = len(trace)

    def mode(self) -> str:
        """How this flow's `llm` steps talk: its `engines.llm_mode`, else the service's."""
        engines = self.flow.engines
        return (engines.llm_mode if engines is not None and engines.llm_mode
                else self.llm_mode)

    async def _call_tool(self, action: engine.CallTool) -> engine.ToolDone:
        started = time.monotonic()
        done = await self.port.with_filler(run_tool(self.tools, action, self.tool_context()))
        self.stats["tool_calls"] += 1
        if not done.ok:
            self.stats["tool_errors"] += 1
        took = round((time.monotonic() - started) * 1000, 1)
        self.log.info("tool_call", step=action.step, tool=action.tool, ok=done.ok,
                      error=done.error, ms=took)
        self.port.tool_ran(ToolRun(action.step, action.tool, dict(action.args), done.ok,
                                   done.error, took))
        return done
