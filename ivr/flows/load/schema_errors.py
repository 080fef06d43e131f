"""Schema errors worded for authors: each pydantic error becomes a `FlowError` at the
line and column of the offending key or value, with what was expected and how to write
it, and errors that only echo another one (a typo'd key also "missing") are dropped."""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag
from pydantic.fields import FieldInfo
from yaml.nodes import MappingNode, Node

from ivr.errors import FlowError
from ivr.flows.check.diagnostics import closest, field_name, suggest, where
from ivr.flows.load.document import data_at, describe_node, locate, pos
from ivr.flows.model import (
    SLOT_TYPES,
    STEP_KIND_ERROR,
    STEP_VERBS,
    TARGET_KIND_ERROR,
    UNION_TAGS,
    Flow,
    Loc,
    step_verb,
)

__all__ = ["schema_errors"]


def _clean(loc: Iterable[str | int]) -> Loc:
    """The location as the author sees it: union tags removed."""
    return tuple(e for e in loc if not (isinstance(e, str) and e in UNION_TAGS))


# --------------------------------------------------------------- model walk


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _descend(tp: Any, elem: str | int) -> Any:
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for member in get_args(tp):
            if get_origin(member) is Annotated and any(
                isinstance(meta, Tag) and meta.tag == elem for meta in member.__metadata__
            ):
                return member
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(elem, str):
        field = _fields(tp).get(elem)
        return None if field is None else field.annotation
    if origin is dict:
        return get_args(tp)[1]
    if origin in (list, tuple) and isinstance(elem, int):
        return get_args(tp)[0]
    return None


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the key written in YAML (`if`, not `if_`)."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _model_at(raw_loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class validating the mapping at a pydantic (tagged) location."""
    tp: Any = Flow
    for elem in raw_loc:
        tp = _descend(tp, elem)
        if tp is None:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


# ------------------------------------------------------------- schema errors

_EXPECTED: dict[str, tuple[str, str]] = {
    # pydantic error type -> (what was expected, how to write it)
    "string_type": (
        "text",
        "write the text after the colon; quote it if it has special characters",
    ),
    "int_type": ("a whole number", "write digits only, e.g. 5000"),
    "int_parsing": ("a whole number", "write digits only, e.g. 5000"),
    "int_from_float": ("a whole number", "write digits only, e.g. 5000"),
    "bool_type": ("true or false", "write true or false"),
    "bool_parsing": ("true or false", "write true or false"),
    "list_type": ("a list", "write [a, b] or one '- item' per line"),
    "tuple_type": ("a list", "write [a, b] or one '- item' per line"),
    "dict_type": ("a mapping", "write 'key: value' lines indented below it"),
    "model_type": ("a mapping", "write 'key: value' lines indented below it"),
    "model_attributes_type": ("a mapping", "write 'key: value' lines indented below it"),
}


def _step_kind_error(loc: Loc, root: Node, data: Any, file: str) -> FlowError:
    found = locate(root, loc)
    name = loc[1] if len(loc) >= 2 else "?"
    raw = data_at(data, loc)
    line, col = pos(found.node)
    verbs = ", ".join(STEP_VERBS)
    if not isinstance(raw, dict):
        return FlowError(
            f"step '{name}' must be a mapping, got {describe_node(found.node)}",
            file=file,
            line=line,
            col=col,
            hint=f'write e.g. {name}: {{say: "Hello.", next: other}}',
        )
    for key in raw:
        verb = closest(str(key), STEP_VERBS)
        if verb is not None and isinstance(found.node, MappingNode):
            key_found = locate(root, (*loc, str(key)))
            kl, kc = pos(key_found.key or found.node)
            return FlowError(
                f"step '{name}' has no action: unknown key '{key}'",
                file=file,
                line=kl,
                col=kc,
                hint=f"did you mean '{verb}'? a step needs one of: {verbs}",
            )
    return FlowError(
        f"step '{name}' has no action",
        file=file,
        line=line,
        col=col,
        hint=(
            "give it one of: say (speak), ask (prompt and listen), set (store values), "
            "branch (decide), call (run a tool), llm (an agent), transfer, hangup"
        ),
    )


def _schema_error(err: Mapping[str, Any], root: Node, data: Any, file: str) -> FlowError:
    raw_loc: tuple[str | int, ...] = tuple(err["loc"])
    loc = _clean(raw_loc)
    kind: str = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}

    if kind == STEP_KIND_ERROR:
        return _step_kind_error(loc, root, data, file)

    found = locate(root, loc)
    line, col = pos(found.node)

    if kind == "extra_forbidden":
        container, key = loc[:-1], str(loc[-1])
        if found.key is not None:
            line, col = pos(found.key)
        model = _model_at(raw_loc[:-1])
        valid = list(_fields(model)) if model is not None else []
        if key in STEP_VERBS and len(container) == 2 and container[0] == "steps":
            verb = step_verb(data_at(data, container))
            return FlowError(
                f"step '{container[1]}' has both '{verb}' and '{key}'; a step does one thing",
                file=file,
                line=line,
                col=col,
                hint="split it into two steps linked with 'next'",
            )
        return FlowError(
            f"{where(container)}: unknown key '{key}'",
            file=file,
            line=line,
            col=col,
            hint=suggest(key, valid, "valid keys") if valid else None,
        )

    if kind == "missing":
        container, key = loc[:-1], str(loc[-1])
        hint = f"add '{key}: ...'"
        if key == "start" and isinstance(data, dict) and isinstance(data.get("steps"), dict):
            first = next(iter(data["steps"]), None)
            if first is not None:
                hint = f"add 'start: {first}' naming the step the call begins with"
        elif key == "goto":
            hint = "add 'goto: <step>' naming the step this choice leads to"
        return FlowError(
            f"{where(container)}: missing required key '{key}'",
            file=file,
            line=line,
            col=col,
            hint=hint,
        )

    container, field = field_name(loc)
    at = where(container)
    got = describe_node(found.node) if found.complete else "nothing"
    if kind in _EXPECTED:
        expected, hint = _EXPECTED[kind]
        if got == "nothing":
            hint = f"write a value after '{field}:'"
        return FlowError(
            f"{at}: '{field}' must be {expected}, got {got}",
            file=file,
            line=line,
            col=col,
            hint=hint,
        )
    if kind == TARGET_KIND_ERROR:
        return FlowError(
            f"{at}: '{field}' must be a step name or {{flow: name}}, got {got}",
            file=file,
            line=line,
            col=col,
            hint=f"write e.g. {field}: menu",
        )
    problem: str
    if kind == "greater_than_equal":
        problem = f"must be at least {ctx.get('ge')}"
    elif kind == "less_than_equal":
        problem = f"must be at most {ctx.get('le')}"
    elif kind == "string_too_short":
        problem = "must not be empty"
    elif kind == "too_short":
        least = ctx.get("min_length")
        return FlowError(
            f"{at}: '{field}' needs at least {'one item' if least == 1 else f'{least} items'}",
            file=file,
            line=line,
            col=col,
        )
    elif kind == "literal_error":
        if field == "type" and len(container) == 2 and container[0] == "slots":
            # The slot type is the one literal whose valid values authors must look up.
            value = str(data_at(data, loc))
            best = closest(value, SLOT_TYPES)
            return FlowError(
                f"{at}: unknown slot type {value!r}",
                file=file,
                line=line,
                col=col,
                hint=(f"did you mean '{best}'? " if best else "")
                + f"valid types: {', '.join(SLOT_TYPES)}",
            )
        problem = f"must be {ctx.get('expected')}"
    elif kind == "value_error":
        # A model's own rule (a slot's choices, min above max): the message says it all.
        message = str(ctx.get("error") or err.get("msg", kind))
        message = message.removeprefix("Value error, ")
        return FlowError(f"{where(loc)}: {message}", file=file, line=line, col=col)
    else:
        msg = str(err.get("msg", kind))
        problem = msg[:1].lower() + msg[1:]
    return FlowError(f"{at}: '{field}' {problem}, got {got}", file=file, line=line, col=col)


def _without_echoes(errors: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Drop errors that only echo another one.

    "missing 'next'" when the same mapping has an unknown key 'nxt': a misspelled key
    causes both, and the author only needs the one that names the typo and the fix.
    """
    typos: set[tuple[Loc, str]] = set()
    for err in errors:
        if err["type"] != "extra_forbidden":
            continue
        raw_loc = tuple(err["loc"])
        model = _model_at(raw_loc[:-1])
        if model is not None:
            best = closest(str(raw_loc[-1]), _fields(model))
            if best is not None:
                typos.add((_clean(raw_loc[:-1]), best))
    # pydantic also calls a list "too short" when its only items were invalid; the
    # items' own errors are the ones to fix.
    with_bad_items = {
        tuple(err["loc"][:i])
        for err in errors
        for i, elem in enumerate(err["loc"])
        if isinstance(elem, int)
    }
    return [
        err
        for err in errors
        if not (
            err["type"] == "missing" and (_clean(err["loc"][:-1]), str(err["loc"][-1])) in typos
        )
        and not (err["type"] == "too_short" and tuple(err["loc"]) in with_bad_items)
    ]


def schema_errors(
    errors: Sequence[Mapping[str, Any]], root: Node, data: Any, file: str
) -> list[FlowError]:
    """The pydantic `errors` of the flow document `data` (composed as `root`) worth
    telling, worded and located, in pydantic's order."""
    return [_schema_error(err, root, data, file) for err in _without_echoes(errors)]
