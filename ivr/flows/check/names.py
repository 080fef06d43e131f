"""Checks that every name a flow uses exists: slots (declared, usable in templates, `set`
literals that fit their type), tools (declared, and known when the registry is given),
and the names templates read."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime

from ivr.flows import templates
from ivr.flows.check.dataflow import result_names
from ivr.flows.check.diagnostics import Finding, field_name, suggest, where
from ivr.flows.check.validate import declare_hint
from ivr.flows.model import CallStep, Flow, LlmStep, Loc, SetStep
from ivr.flows.slots import coerce_value

__all__ = ["validate_slots", "validate_templates", "validate_tools"]

_CONDITION_HINT = "write a Jinja expression, e.g. slots.party > 8"
_TEMPLATE_HINT = (
    "templates use {{ expression }}; see the flow format in ivr/flows/model/__init__.py"
)

def validate_slots(flow: Flow) -> list[Finding]:
    """Slot and result names are usable in templates; `set` only sets declared slots."""
    issues: list[Finding] = []
    for slot in flow.slots:
        if not slot.isidentifier():
            issues.append(
                Finding(
                    ("slots", slot),
                    f"slot name '{slot}' cannot be used in templates (slots.{slot})",
                    "use letters, digits and underscores, e.g. "
                    + re.sub(r"\W+", "_", slot).strip("_"),
                    at_key=True,
                )
            )
    for name, step in flow.steps.items():
        if isinstance(step, SetStep):
            for key, value in step.set.items():
                loc: Loc = ("steps", name, "set", key)
                slot_def = flow.slots.get(key)
                if slot_def is None:
                    issues.append(
                        Finding(
                            loc,
                            f"{where(loc[:2])}: slot '{key}' is not declared",
                            declare_hint(key, flow),
                            at_key=True,
                        )
                    )
                    continue
                if isinstance(value, str) and templates.has_syntax(value):
                    continue
                # A literal can be checked now, by the same conversion the runner does.
                now = datetime.now(zoneinfo.ZoneInfo("UTC"))
                if coerce_value(slot_def, value, now=now) is None:
                    issues.append(
                        Finding(
                            loc,
                            f"{where(loc[:2])}: {value!r} is not a valid {slot_def.type} "
                            f"for slot '{key}'",
                            f"give a {slot_def.type} value, or a template",
                        )
                    )
        if isinstance(step, CallStep) and step.result is not None:
            if not step.result.isidentifier():
                issues.append(
                    Finding(
                        ("steps", name, "result"),
                        f"{where(('steps', name))}: result name '{step.result}' cannot be "
                        f"used in templates (vars.{step.result})",
                        "use letters, digits and underscores",
                    )
                )
    return issues


def validate_tools(flow: Flow, known_tools: set[str] | None = None) -> list[Finding]:
    """Steps only use tools the flow declares; declared tools exist (when known)."""
    issues: list[Finding] = []
    declared = set(flow.tools)
    used: set[str] = set()
    for i, tool in enumerate(flow.tools):
        if known_tools is not None and tool not in known_tools:
            issues.append(
                Finding(
                    ("tools", i),
                    f"tool '{tool}' does not exist",
                    suggest(tool, sorted(known_tools), "known tools"),
                )
            )
    for name, step in flow.steps.items():
        uses: list[tuple[Loc, str]] = []
        if isinstance(step, CallStep):
            uses.append((("steps", name, "call"), step.call))
        elif isinstance(step, LlmStep):
            uses.extend((("steps", name, "tools", i), t) for i, t in enumerate(step.tools))
        for loc, tool in uses:
            used.add(tool)
            if tool in declared:
                continue
            options = sorted(declared | (known_tools or set()))
            issues.append(
                Finding(
                    loc,
                    f"{where(loc[:2])}: tool '{tool}' is not declared in the flow's tools",
                    "add it to tools: [...] at the top of the flow; "
                    + suggest(tool, options, "tools"),
                )
            )
    for i, tool in enumerate(flow.tools):
        if tool not in used:
            issues.append(
                Finding(
                    ("tools", i),
                    f"tool '{tool}' is declared but no step uses it",
                    "remove it from tools, or call it",
                    severity="warning",
                )
            )
    return issues


def validate_templates(flow: Flow) -> list[Finding]:
    """Templates compile and only name things that exist (slots, results, context)."""
    issues: list[Finding] = []
    results = result_names(flow)
    for use in flow.templates():
        container, field = field_name(use.loc)
        at = f"{where(container)}: '{field}'"
        try:
            templates.check(use.source, use.kind)
        except templates.TemplateFailure as exc:
            hint = _CONDITION_HINT if use.kind == "condition" else _TEMPLATE_HINT
            issues.append(Finding(use.loc, f"{at}: {exc.message}", hint))
            continue
        found = templates.reads(use.source, use.kind)
        for name in sorted(found.unknown):
            issues.append(
                Finding(
                    use.loc,
                    f"{at}: unknown name '{name}'",
                    suggest(name, sorted(templates.CONTEXT_NAMES), "templates can use"),
                )
            )
        for slot in sorted(found.slots - set(flow.slots)):
            issues.append(
                Finding(
                    use.loc,
                    f"{at}: slots.{slot} is not a declared slot",
                    suggest(slot, flow.slots, "slots"),
                )
            )
        for var in sorted(found.vars - results):
            issues.append(
                Finding(
                    use.loc,
                    f"{at}: vars.{var} is not the result of any call step",
                    "name a call's result with result: "
                    + var
                    + ("; " + suggest(var, sorted(results), "results") if results else ""),
                )
            )
    return issues
