"""`ivr flows graph FLOW`: the step graph as a Mermaid flowchart."""

from __future__ import annotations

import re

from ivr.flows.model import Flow, FlowRef

_SHAPES = {"ask": ("{{", "}}"), "hangup": ("([", "])"), "transfer": ("[[", "]]")}


def _id(name: str) -> str:
    return "s_" + re.sub(r"\W", "_", name)


def _label(text: str, limit: int = 48) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace('"', "'")


def _kind(step: object) -> str:
    # transfer before say: a transfer step may also `say` something first.
    for kind in ("transfer", "ask", "say", "hangup", "call", "branch", "set", "llm"):
        if kind in type(step).model_fields and getattr(step, kind, None) is not None:  # type: ignore[attr-defined]
            return kind
    return "step"


def mermaid(flow: Flow) -> str:
    lines = ["flowchart TD", f'    start(("{_label(flow.name)}")) --> {_id(flow.start)}']
    for name, step in flow.steps.items():
        kind = _kind(step)
        text = getattr(step, kind, None)
        open_, close = _SHAPES.get(kind, ("[", "]"))
        detail = f": {_label(str(text))}" if isinstance(text, str) and text else ""
        lines.append(f'    {_id(name)}{open_}"{kind} {name}{detail}"{close}')
    for source, loc, target in flow.links():
        label = str(loc[-1]) if loc[-1] not in ("next",) else ""
        if isinstance(loc[-1], int) or (len(loc) > 2 and loc[-2] == "choices"):
            label = "choice"
        if isinstance(target, FlowRef):
            node = _id("flow_" + target.flow)
            lines.append(f'    {node}[/"flow {target.flow}"/]')
        else:
            node = _id(target)
        arrow = f" -->|{label}| " if label else " --> "
        lines.append(f"    {_id(source)}{arrow}{node}")
    return "\n".join(lines) + "\n"
