"""Templates and conditions in flows: Jinja2, sandboxed and strict.

Flow text is written by flow authors but rendered with values a caller said, so every
template runs in `ImmutableSandboxedEnvironment` (no attribute tricks, no mutating
lists or dicts) with `StrictUndefined` (a misspelt name is an error the flow handles
with `on_error`, never a silent empty string spoken to the caller).

Three uses, one environment:
- text (`say: "Booked for {{ slots.party }}"`) renders to a string;
- conditions (`if: "slots.party > 8"`) are expressions, evaluated for truth;
- values (`set` and `args`) render like text, except that a value which is one lone
  `{{ expression }}` evaluates to that expression's value, so a date stays a date.

The context of every evaluation is `TemplateContext`: `slots`, `vars`, `caller`, `now`.
Compiled templates are cached by source: the loader compiles every template of a flow
(a broken one is a load error), and the runner then finds them compiled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.environment import Template, TemplateExpression
from jinja2.meta import find_undeclared_variables
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ivr.errors import FlowError
from ivr.flows.model import TemplateKind
from ivr.flows.slots import FILTERS

__all__ = [
    "CONTEXT_NAMES",
    "Reads",
    "TemplateContext",
    "TemplateFailure",
    "check",
    "compile_condition",
    "compile_text",
    "evaluate",
    "has_syntax",
    "jsonable",
    "reads",
    "render_text",
    "render_value",
]

CONTEXT_NAMES: frozenset[str] = frozenset({"slots", "vars", "caller", "now"})
# Tests whose whole point is that the name may be missing: reading a slot inside one
# (or in what such a test guards) is not a read of an unset slot.
_GUARD_TESTS = frozenset({"defined", "undefined"})
_GUARD_FILTERS = frozenset({"default", "d"})
_LONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class TemplateFailure(FlowError):
    """A template that does not compile, or failed while rendering."""


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        # Prompts are speech, not HTML: escaping would make the synthesizer read "&amp;".
        autoescape=False,
        keep_trailing_newline=False,
    )
    env.filters.update(FILTERS)
    return env


ENV = _environment()


@dataclass(frozen=True, slots=True)
class TemplateContext:
    """What a template can see. `slots` holds typed values (SlotValue.value)."""

    slots: Mapping[str, Any] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)
    caller: str = ""
    now: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        names: dict[str, Any] = {"slots": dict(self.slots), "vars": dict(self.vars)}
        names["caller"] = self.caller
        if self.now is not None:
            names["now"] = self.now
        return names


def has_syntax(source: str) -> bool:
    """Whether `source` contains template syntax (plain text renders as itself)."""
    return "{{" in source or "{%" in source or "{#" in source


def _failure(exc: TemplateError, source: str, what: str) -> TemplateFailure:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    line = getattr(exc, "lineno", None)
    where = f" (template line {line})" if line and "\n" in source.strip() else ""
    return TemplateFailure(f"{what}: {message}{where}")


@lru_cache(maxsize=4096)
def compile_text(source: str) -> Template:
    """The compiled text template; raises `TemplateFailure`."""
    try:
        return ENV.from_string(source)
    except TemplateError as exc:
        raise _failure(exc, source, "template does not compile") from None


@lru_cache(maxsize=4096)
def compile_condition(source: str) -> TemplateExpression:
    """The compiled expression; raises `TemplateFailure`."""
    try:
        return ENV.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise _failure(exc, source, "condition does not compile") from None


def _lone_expression(source: str) -> str | None:
    match = _LONE_EXPRESSION.match(source)
    if match is None:
        return None
    expr = match.group("expr")
    # "{{ a }} and {{ b }}" also matches the pattern; only one tag is a lone expression.
    if any(token in expr for token in ("{{", "}}", "{%", "{#")):
        return None
    return expr


def check(source: str, kind: TemplateKind) -> None:
    """Compile `source` as `kind` (the loader's load-time check); raises `TemplateFailure`."""
    if kind == "condition":
        compile_condition(source)
        return
    compile_text(source)
    expr = _lone_expression(source) if kind == "value" else None
    if expr is not None:
        compile_condition(expr)


def _render_failure(exc: Exception, source: str) -> TemplateFailure:
    if isinstance(exc, TemplateError):
        return _failure(exc, source, f"template {source!r} failed")
    # Sandboxed code can still raise ordinary errors (comparing a date with a number,
    # dividing by zero); the caller must get on_error, not a crashed call.
    return TemplateFailure(f"template {source!r} failed: {type(exc).__name__}: {exc}")


def render_text(source: str, ctx: TemplateContext) -> str:
    """Render a text template; raises `TemplateFailure`."""
    if not has_syntax(source):
        return source
    template = compile_text(source)
    try:
        return template.render(ctx.as_dict())
    except Exception as exc:
        raise _render_failure(exc, source) from None


def evaluate(source: str, ctx: TemplateContext) -> bool:
    """Evaluate a condition for truth; raises `TemplateFailure`."""
    expression = compile_condition(source)
    try:
        return bool(expression(**ctx.as_dict()))
    except Exception as exc:
        raise _render_failure(exc, source) from None


def render_value(source: Any, ctx: TemplateContext) -> Any:
    """A `set`/`args` value: literals as they are, a lone expression typed, else text."""
    if not isinstance(source, str):
        return source
    expr = _lone_expression(source)
    if expr is None:
        return render_text(source, ctx)
    expression = compile_condition(expr)
    try:
        value = expression(**ctx.as_dict())
    except Exception as exc:
        raise _render_failure(exc, source) from None
    if isinstance(value, Undefined):
        # An expression hands back a missing name as an Undefined object instead of
        # raising (only printing it raises); it is the same mistake as in text.
        raise TemplateFailure(f"template {source!r} failed: {value._undefined_message}")
    return value


def jsonable(value: Any) -> Any:
    """`value` with dates and times as ISO text, so tool arguments stay JSON."""
    if isinstance(value, time | datetime) and not (value.second or value.microsecond):
        # "19:30", the form a slot's text has, rather than "19:30:00".
        return value.isoformat(timespec="minutes")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# ------------------------------------------------------------------ analysis


@dataclass(frozen=True, slots=True)
class Reads:
    """What a template reads: `slots.X` and `vars.X` names, and unknown top-level names."""

    slots: frozenset[str] = frozenset()
    vars: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()


def _parse(source: str, kind: TemplateKind) -> nodes.Node:
    if kind == "condition":
        parser = Parser(ENV, source, state="variable")
        return parser.parse_expression()
    return ENV.parse(source)


def _named(node: nodes.Node) -> tuple[str, str] | None:
    """("slots", "day") for `slots.day` or `slots['day']`, else None."""
    if isinstance(node, nodes.Getattr):
        inner, name = node.node, node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        inner, name = node.node, node.arg.value
    else:
        return None
    if isinstance(inner, nodes.Name) and inner.name in ("slots", "vars") and isinstance(name, str):
        return inner.name, name
    return None


def _defined_in(test: nodes.Node) -> frozenset[tuple[str, str]]:
    """Names a condition proves are set when it holds (`slots.x is defined and ...`)."""
    if isinstance(test, nodes.And):
        return _defined_in(test.left) | _defined_in(test.right)
    if isinstance(test, nodes.Test) and test.name == "defined":
        named = _named(test.node)
        if named is not None:
            return frozenset({named})
    return frozenset()


def _walk(node: nodes.Node, guarded: frozenset[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    named = _named(node)
    if named is not None:
        if named not in guarded:
            yield named
        return
    if isinstance(node, nodes.Test) and node.name in _GUARD_TESTS:
        return
    if isinstance(node, nodes.Filter) and node.name in _GUARD_FILTERS:
        # `slots.x | default('...')`: the value is optional by construction.
        for arg in node.args:
            yield from _walk(arg, guarded)
        return
    if isinstance(node, nodes.And):
        yield from _walk(node.left, guarded)
        yield from _walk(node.right, guarded | _defined_in(node.left))
        return
    if isinstance(node, nodes.If | nodes.CondExpr):
        proven = guarded
        if node.test is not None:
            yield from _walk(node.test, guarded)
            proven = guarded | _defined_in(node.test)
        if isinstance(node, nodes.If):
            for child in node.body:
                yield from _walk(child, proven)
            for child in [*node.elif_, *node.else_]:
                yield from _walk(child, guarded)
        else:
            yield from _walk(node.expr1, proven)
            if node.expr2 is not None:
                yield from _walk(node.expr2, guarded)
        return
    for child in node.iter_child_nodes():
        yield from _walk(child, guarded)


@lru_cache(maxsize=4096)
def reads(source: str, kind: TemplateKind) -> Reads:
    """What `source` reads; a source that does not parse reads nothing (it is reported
    as not compiling)."""
    if kind != "condition" and not has_syntax(source):
        return Reads()
    try:
        tree = _parse(source, kind)
        if isinstance(tree, nodes.Template):
            # Runs the compiler's analysis, which also rejects unknown filters.
            top = find_undeclared_variables(tree)
        else:
            top = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    except TemplateError:
        return Reads()
    found = set(_walk(tree, frozenset()))
    return Reads(
        slots=frozenset(name for root, name in found if root == "slots"),
        vars=frozenset(name for root, name in found if root == "vars"),
        # Jinja's own globals (range, namespace, ...) are fine to use.
        unknown=frozenset(top - CONTEXT_NAMES - set(ENV.globals)),
    )
