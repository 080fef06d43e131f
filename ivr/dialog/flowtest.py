"""`ivr flows test FILE...`: conversation tests for flows, written in YAML.

```yaml
flow: order_status                  # the flow under test (looked up in --flows DIR)
now: "2026-11-23T10:00:00-05:00"    # the call's clock (optional; default: real time)
caller: "+15550100001"              # the verified caller the tools act for (default: anonymous)
tests:
  - name: finds an order by keypad
    turns:
      - expect: ["order number"]    # fragments the bot says at the start
      - say: "#4567"                # '#' + digits presses keys; text is speech; "" = silence
        expect: ["shipped"]
    slots: {order: "4567"}          # slot values (text form) at the end
    tools: [lookups.order_status]   # tools called, in order (a subsequence)
    ends: hangup                    # a fragment of how the call ended
  - name: a withheld number hears no order details
    caller: ""                      # this test's caller, instead of the file's
    ...
```
Every test runs on a fresh database seeded with the demo data, so tools behave the same
every time.

An `llm` step never reaches a remote provider here. Without `llm:` in the test it takes
its fallback, as a server without `IVR_LLM_*` does; with `llm:` it runs the agent against
the replies listed there, in order (format: `ivr/dialog/scripted_model.py`):
```yaml
    llm:
      - say: Sure. What can I book for you?
      - call: bookings.book
        args: {service: cleaning, day: "2026-11-25", start: "15:00", name: Pat}
```
A test fails when the model asks for more replies than it lists, or leaves some unused.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ivr.dialog.conversation import TextConversation
from ivr.dialog.scripted_model import ScriptedModel, parse_script
from ivr.errors import FlowError
from ivr.flows.model import Flow
from ivr.tools.registry import default_registry
from ivr.tools.seed import seed


@dataclass
class Outcome:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _text(value: Any) -> str:
    # YAML 1.1 reads an unquoted `say: yes` as a boolean: mean the word.
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def _contains(haystack: str, needle: str) -> bool:
    return needle.lower() in haystack.lower()


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise FlowError(f"not valid YAML: {exc}", file=str(path)) from None
    if not isinstance(spec, dict) or "flow" not in spec or "tests" not in spec:
        raise FlowError("a flow test file needs `flow:` and `tests:`", file=str(path),
                        hint="see `ivr flows test --help` for the format")
    return spec


async def run_file(path: Path, spec: dict[str, Any], flows: dict[str, Flow]) -> list[Outcome]:
    flow = str(spec["flow"])
    if flow not in flows:
        raise FlowError(f"unknown flow {flow!r}", file=str(path),
                        hint=f"known flows: {', '.join(sorted(flows))}")
    now = datetime.fromisoformat(str(spec["now"])) if spec.get("now") else None
    outcomes = []
    for case in spec["tests"]:
        caller = case["caller"] if "caller" in case else spec.get("caller")
        outcomes.append(await run_case(path, flows, flow, case, now, _text(caller)))
    return outcomes


async def run_case(
    path: Path, flows: dict[str, Flow], flow: str, case: dict[str, Any],
    now: datetime | None, caller: str,
) -> Outcome:
    out = Outcome(str(path), str(case.get("name", "unnamed")))
    model = (ScriptedModel(parse_script(case["llm"], str(path), out.name))
             if case.get("llm") is not None else None)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "test.db"
        await seed(db, today=now.date() if now else None)
        conv = TextConversation(flows, flow, default_registry(db), db_path=db, caller=caller,
                                now=(lambda: now) if now else None,
                                model=(lambda _flow: model) if model is not None else None)
        try:
            await _play(conv, case, out)
        finally:
            await conv.close()
    if model is not None and model.overrun:
        out.failures.append(f"llm: the model was asked for {len(model.requests)} replies, "
                            f"the test scripts {len(model.replies)}")
    elif model is not None and model.unused:
        out.failures.append(f"llm: {model.unused} scripted replies were never asked for")
    return out


async def _play(conv: TextConversation, case: dict[str, Any], out: Outcome) -> None:
    """Type the test's turns, then check slots, tools and the ending."""
    for i, turn in enumerate(case.get("turns") or []):
        if i == 0 and "say" not in turn:
            ex = await conv.start()
        else:
            if i == 0:
                await conv.start()
            if conv.done:
                out.failures.append(f"turn {i + 1}: the call had already ended")
                break
            said_by_caller = _text(turn.get("say", ""))
            ex = await conv.turn(said_by_caller)
            out.transcript.append(f"caller: {said_by_caller!r}")
        said = " ".join(ex.bot)
        out.transcript.append(f"bot: {said}")
        for fragment in turn.get("expect") or []:
            if not _contains(said, str(fragment)):
                out.failures.append(
                    f"turn {i + 1}: expected the bot to say {fragment!r}, it said {said!r}")
    for name, want in (case.get("slots") or {}).items():
        got = conv.runner.slots.get(name)
        if got is None or str(got.text) != _text(want):
            out.failures.append(f"slot {name}: expected {want!r}, "
                                f"got {got.text if got else None!r}")
    wanted = [str(t) for t in case.get("tools") or []]
    it = iter(conv.tool_calls)
    if not all(any(t == c for c in it) for t in wanted):
        out.failures.append(f"tools: expected {wanted} in order, called {conv.tool_calls}")
    ends = case.get("ends")
    if ends:
        ended = next((e.ended for e in reversed(conv.exchanges) if e.ended), None) or ""
        if not _contains(ended, str(ends)):
            out.failures.append(f"ends: expected {ends!r}, the call ended {ended!r}")
