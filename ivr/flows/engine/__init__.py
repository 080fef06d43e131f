"""`FlowRunner`: the step machine. Events in, actions out; nothing else.

No audio, no I/O, no asyncio, no tools: the phone call, `ivr chat` and flow tests all
drive the same runner with text, digits, no-input and tool-result events, and carry
out its actions their own way. The only outside things it reads are the clock (`now`,
injectable) and the caller's number, both given to the constructor.

    runner = FlowRunner(flow, caller="+15550100001")
    runner.start()                  # [Play(greeting), Play(menu prompt), Listen(...)]
    runner.handle(Speech("sales"))  # [Play(answer), Play("Goodbye."), Hangup("completed")]
    runner.done, runner.outcome     # True, "completed"

After `start()` and after every `handle()` the runner is in one of three states:
- waiting for the caller at an ask step: the last action is a `Listen`; feed `Speech`,
  `Digits` or `NoInput` (`waiting_for == "input"`);
- waiting for a tool: the last action is a `CallTool`; run the tool and feed its
  result as `ToolDone` (`waiting_for == "tool"`);
- done: the last action is a `Hangup`, `GotoFlow` or `Transfer` (`done`).
`CallerHangup` ends the run in any state. Every input handled at an ask is recorded as
a `Turn` in `runner.turns`; what else happened (tool calls and results, slots set,
errors handled, the LLM step's fallback) is recorded as `Trace`s in `runner.trace`.
Slots filled are in `runner.slots` (name -> `SlotValue`), tool results in `runner.vars`.

The package: `actions` (out), `events` (in), `records` (`Turn`, `Trace`), `collection`
(listening at an ask and what an answer means there), `runner` (`FlowRunner`). Import
from `ivr.flows.engine`.
"""

from __future__ import annotations

from ivr.flows.engine.actions import (
    Action,
    CallTool,
    DtmfSpec,
    GotoFlow,
    Hangup,
    Listen,
    Outcome,
    Play,
    RunAgent,
    Transfer,
)
from ivr.flows.engine.events import (
    AgentDone,
    CallerHangup,
    Digits,
    Event,
    NoInput,
    Speech,
    ToolDone,
)
from ivr.flows.engine.records import Trace, TraceKind, Turn
from ivr.flows.engine.runner import FlowRunner

__all__ = [
    "Action",
    "AgentDone",
    "CallTool",
    "CallerHangup",
    "Digits",
    "DtmfSpec",
    "Event",
    "FlowRunner",
    "GotoFlow",
    "Hangup",
    "Listen",
    "NoInput",
    "Outcome",
    "Play",
    "RunAgent",
    "Speech",
    "ToolDone",
    "Trace",
    "TraceKind",
    "Transfer",
    "Turn",
]
