"""A chat model that plays back replies written in a flow test: no provider, no network.

`ivr flows test` runs an `llm` step only with this model (or takes the step's fallback
when the test scripts none), so flow tests are repeatable and never reach a remote
provider. In a test file, `llm:` lists the model's replies in the order it is asked:

```yaml
llm:
  - say: Sure. What can I book for you?       # text, spoken sentence by sentence
  - call: bookings.check_availability         # one tool call (dotted registry name)
    args: {day: "2026-11-25"}
  - say: Booking it now.                      # text and several calls in one reply
    calls:
      - {call: bookings.book, args: {service: cleaning, day: "2026-11-25", start: "15:00"}}
```
The built-ins `set_slot`, `end_conversation` and `transfer_to_human` are called by name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from ivr.errors import FlowError
from ivr.llm.client import AudioOut, ChatDelta, TextDelta, ToolCallDone
from ivr.providers.http import ProviderError
from ivr.tools.base import openai_name

__all__ = ["ScriptedModel", "ScriptedReply", "parse_script"]


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    say: str = ""
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()  # (dotted tool name, arguments)


@dataclass
class ScriptedModel:
    """Answers each chat request with the next scripted reply; records every request."""

    replies: list[ScriptedReply]
    model: str = "scripted"
    requests: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def unused(self) -> int:
        return max(0, len(self.replies) - len(self.requests))

    @property
    def overrun(self) -> bool:
        """The model was asked for more replies than the test scripts."""
        return len(self.requests) > len(self.replies)

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        *, audio: AudioOut | None = None,
    ) -> AsyncGenerator[ChatDelta, None]:
        # Scripted replies are text even in audio mode: the agent speaks them as sentences.
        n = len(self.requests)
        self.requests.append(list(messages))
        if n >= len(self.replies):
            # A provider failure to the agent: the step takes its fallback, and the flow
            # test reports the missing reply.
            raise ProviderError(self.model, f"the test scripts {len(self.replies)} "
                                            f"replies; reply {n + 1} was asked for")
        reply = self.replies[n]
        if reply.say:
            yield TextDelta(reply.say)
        for i, (name, args) in enumerate(reply.calls):
            yield ToolCallDone(f"call_{n + 1}_{i}", openai_name(name), json.dumps(args))


def _call(entry: Any, where: str, file: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("call"), str):
        raise FlowError(f"{where}: a tool call needs `call: <tool name>`", file=file,
                        hint="e.g. {call: bookings.book, args: {day: '2026-11-25'}}")
    args = entry.get("args") or {}
    if not isinstance(args, dict):
        raise FlowError(f"{where}: `args` must be a mapping", file=file)
    unknown = set(entry) - {"call", "args"}
    if unknown:
        raise FlowError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", file=file,
                        hint="a tool call has `call` and `args`")
    return entry["call"], args


def parse_script(raw: Any, file: str, test: str) -> list[ScriptedReply]:
    """A test's `llm:` list as replies; a malformed entry is a `FlowError` naming it."""
    if not isinstance(raw, list):
        raise FlowError(f"test {test!r}: `llm` must be a list of replies", file=file,
                        hint="each reply has `say`, `call` + `args`, or `calls`")
    replies = []
    for i, entry in enumerate(raw, 1):
        where = f"test {test!r}, llm reply {i}"
        if isinstance(entry, str):
            entry = {"say": entry}
        if not isinstance(entry, dict):
            raise FlowError(f"{where}: expected a mapping", file=file)
        unknown = set(entry) - {"say", "call", "args", "calls"}
        if unknown:
            raise FlowError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", file=file,
                            hint="a reply has `say`, `call` + `args`, or `calls`")
        calls = []
        if "call" in entry:
            calls.append(_call({k: entry[k] for k in ("call", "args") if k in entry},
                               where, file))
        elif "args" in entry:
            raise FlowError(f"{where}: `args` without `call`", file=file)
        extra = entry.get("calls") or []
        if not isinstance(extra, list):
            raise FlowError(f"{where}: `calls` must be a list", file=file)
        calls.extend(_call(c, where, file) for c in extra)
        say = entry.get("say")
        if say is not None and not isinstance(say, str):
            raise FlowError(f"{where}: `say` must be text", file=file)
        if not say and not calls:
            raise FlowError(f"{where}: a reply says something or calls a tool", file=file)
        replies.append(ScriptedReply(say or "", tuple(calls)))
    return replies
