"""YAML flow files -> `Flow`, with every error located at `file:line:col`.

Loading runs in phases, each of which only starts when the one before succeeded:
1. YAML syntax (composed to nodes that remember their positions) and duplicate keys.
2. Schema: pydantic validates the plain data; each error's `loc` is walked back through
   the node tree to the line and column of the offending key or value.
3. Meaning: the checks of `ivr.flows.lint` over the valid model (targets exist,
   templates compile, tools are declared, every step is reachable and can end the
   call, slots are set before they are read), reported as `Finding`s located the
   same way.

Errors: the `load_*` functions raise `FlowLoadError`, a `FlowError` located at the first
problem whose `.errors` lists all problems found (sorted by position) and whose `str()`
shows them one per line. Warnings do not stop a load; `check_paths` (what `ivr flows
check` prints) returns errors and warnings alike as `Issue`s and raises nothing.
Loading has no side effects: nothing is registered or cached except compiled templates,
so a broken file never disturbs flows already loaded.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ivr.errors import FlowError, InvalidValue
from ivr.flows.lint import (
    SEMANTIC_CHECKS,
    Finding,
    Issue,
    closest,
    field_name,
    lint_flow,
    suggest,
    validate_choices,
    validate_loops,
    validate_start,
    validate_targets,
    where,
)
from ivr.flows.model import (
    STEP_KIND_ERROR,
    STEP_VERBS,
    TARGET_KIND_ERROR,
    UNION_TAGS,
    Flow,
    FlowRef,
    Loc,
    step_verb,
)
from ivr.flows.slots import SLOT_TYPES

__all__ = [
    "SEMANTIC_CHECKS",
    "Finding",
    "FlowLoadError",
    "Issue",
    "check_paths",
    "load_flow",
    "load_flow_text",
    "load_flows",
    "validate_choices",
    "validate_loops",
    "validate_start",
    "validate_targets",
]

FLOW_SUFFIXES = (".yaml", ".yml")
# YAML files that live among the flows but are not flows (the called-number routing
# table of `ivr.flows.library`); reading a directory of flows skips them.
NOT_FLOWS = frozenset({"routes.yaml", "routes.yml"})


def _is_flow_file(path: Path) -> bool:
    return path.suffix in FLOW_SUFFIXES and path.name not in NOT_FLOWS and path.is_file()


class FlowLoadError(FlowError):
    """One or more problems in flow files; located at the first, `.errors` has them all."""

    def __init__(self, errors: Sequence[FlowError]) -> None:
        if not errors:
            raise InvalidValue("FlowLoadError needs at least one error")
        first = errors[0]
        more = len(errors) - 1
        message = first.message + (f" (and {more} more)" if more else "")
        super().__init__(message, file=first.file, line=first.line, col=first.col, hint=first.hint)
        self.errors: list[FlowError] = list(errors)

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce would call cls(message) and lose the list.
        return (type(self), (self.errors,))

    def __str__(self) -> str:
        return "\n".join(FlowError.__str__(e) for e in self.errors)


# --------------------------------------------------------------------------- YAML


class _FlowYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: `no`, `on`, `yes` stay words, and no timestamps.

    Authors write choice words like `[yes, no]` and step names like `on`; YAML 1.1
    would silently turn those into booleans. Likewise `set: {day: 2026-11-24}` stays
    text, which the date slot then parses, instead of a date no text field accepts.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_FlowYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_FlowYamlLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _keys_column(line: str) -> int:
    """1-based column where the keys of `line` start (after any `- ` list markers)."""
    stripped = line.lstrip(" ")
    col = len(line) - len(stripped)
    while stripped.startswith("- "):
        rest = stripped[2:].lstrip(" ")
        col += len(stripped) - len(rest)
        stripped = rest
    return col + 1


def _previous_line(lines: Sequence[str], index: int) -> str | None:
    for i in range(index - 1, -1, -1):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            return lines[i]
    return None


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> FlowError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if mark is None:
        return FlowError(f"YAML syntax error: {problem}", file=file)
    line, col = mark.line + 1, mark.column + 1
    lines = text.splitlines()
    src = lines[mark.line] if mark.line < len(lines) else ""
    indent = len(src) - len(src.lstrip(" "))
    above = _previous_line(lines, mark.line)
    above_col = _keys_column(above) if above is not None else 1

    if "'\\t'" in problem:
        return FlowError(
            "tab character in indentation",
            file=file,
            line=line,
            col=col,
            hint="YAML indents with spaces only; replace the tab with spaces",
        )
    if "but got '?'" in problem:
        # PyYAML reads "?" in {...} as a key marker, so `{ask: Which day?, ...}` breaks.
        return FlowError(
            "unexpected '?' inside {...}",
            file=file,
            line=line,
            col=col,
            hint='quote text with a question mark inside {...}, e.g. {ask: "Which day?"}',
        )
    if problem.startswith("mapping values are not allowed"):
        before = src[: mark.column].strip()
        if ": " in before or before.startswith("- "):
            return FlowError(
                "unexpected ':' inside a value",
                file=file,
                line=line,
                col=col,
                hint='quote text that contains ": ", e.g. say: "Note: we are closed"',
            )
        # A key indented deeper than its siblings reads as the continuation of the
        # value above, so the parser only notices at the colon; point at the key.
        return FlowError(
            f"bad indentation: '{before}' is indented deeper than the line above",
            file=file,
            line=line,
            col=indent + 1,
            hint=f"line it up with the keys above (column {above_col})",
        )
    if problem.startswith("expected <block end>"):
        return FlowError(
            "bad indentation: this line does not line up with the keys above",
            file=file,
            line=line,
            col=indent + 1,
            hint=(
                f"keys of one mapping start in the same column; the line above starts its "
                f"keys in column {above_col}"
            ),
        )
    context = ""
    if exc.context and exc.context_mark is not None:
        context = f" ({exc.context} started at line {exc.context_mark.line + 1})"
    return FlowError(f"YAML syntax error: {problem}{context}", file=file, line=line, col=col)


def _duplicate_keys(root: Node, file: str) -> list[FlowError]:
    # PyYAML silently keeps the last of two equal keys, which hides a whole step.
    errors: list[FlowError] = []
    seen_nodes: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue  # aliases share nodes, and may even be recursive
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first_at: dict[str, Node] = {}
            for key, value in node.value:
                stack.append(value)
                if not isinstance(key, ScalarNode) or key.value == "<<":
                    continue
                if key.value in first_at:
                    first_line, _ = _pos(first_at[key.value])
                    line, col = _pos(key)
                    errors.append(
                        FlowError(
                            f"duplicate key '{key.value}' (first defined at line {first_line})",
                            file=file,
                            line=line,
                            col=col,
                            hint="remove or rename one of them",
                        )
                    )
                else:
                    first_at[key.value] = key
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return errors


def _compose(text: str, file: str) -> tuple[Node | None, Any]:
    loader = _FlowYamlLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        dupes = _duplicate_keys(root, file)
        if dupes:
            raise FlowLoadError(dupes)
        return root, loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise FlowLoadError([_syntax_error(exc, text, file)]) from None
    except yaml.YAMLError as exc:
        raise FlowLoadError([FlowError(f"YAML error: {exc}", file=file)]) from None
    finally:
        loader.dispose()


# ------------------------------------------------------------------ locations


@dataclass(frozen=True, slots=True)
class _Found:
    node: Node  # the deepest node reached
    key: Node | None  # the key node of the last mapping entry stepped into
    complete: bool  # whether the whole location resolved


def _clean(loc: Iterable[str | int]) -> Loc:
    """The location as the author sees it: union tags removed."""
    return tuple(e for e in loc if not (isinstance(e, str) and e in UNION_TAGS))


def _locate(root: Node, loc: Loc) -> _Found:
    node, key = root, None
    for elem in loc:
        if elem == "[key]" and key is not None:
            return _Found(key, key, True)
        if isinstance(node, MappingNode):
            entry = next(
                (
                    (k, v)
                    for k, v in reversed(node.value)
                    if isinstance(k, ScalarNode) and k.value == str(elem)
                ),
                None,
            )
            if entry is None:
                return _Found(node, key, False)
            key, node = entry
        elif isinstance(node, SequenceNode) and isinstance(elem, int):
            if not 0 <= elem < len(node.value):
                return _Found(node, key, False)
            key, node = None, node.value[elem]
        else:
            return _Found(node, key, False)
    return _Found(node, key, True)


def _data_at(data: Any, loc: Loc) -> Any:
    for elem in loc:
        if isinstance(data, dict) and elem in data:
            data = data[elem]
        elif isinstance(data, list) and isinstance(elem, int) and 0 <= elem < len(data):
            data = data[elem]
        else:
            return None
    return data


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


def _describe_node(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        if node.tag.endswith(":null"):
            return "nothing"
        if node.tag.endswith((":int", ":float", ":bool")):
            return str(node.value)
        value = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        return repr(value)
    return "something else"


def _step_kind_error(loc: Loc, root: Node, data: Any, file: str) -> FlowError:
    found = _locate(root, loc)
    name = loc[1] if len(loc) >= 2 else "?"
    raw = _data_at(data, loc)
    line, col = _pos(found.node)
    verbs = ", ".join(STEP_VERBS)
    if not isinstance(raw, dict):
        return FlowError(
            f"step '{name}' must be a mapping, got {_describe_node(found.node)}",
            file=file,
            line=line,
            col=col,
            hint=f'write e.g. {name}: {{say: "Hello.", next: other}}',
        )
    for key in raw:
        verb = closest(str(key), STEP_VERBS)
        if verb is not None and isinstance(found.node, MappingNode):
            key_found = _locate(root, (*loc, str(key)))
            kl, kc = _pos(key_found.key or found.node)
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

    found = _locate(root, loc)
    line, col = _pos(found.node)

    if kind == "extra_forbidden":
        container, key = loc[:-1], str(loc[-1])
        if found.key is not None:
            line, col = _pos(found.key)
        model = _model_at(raw_loc[:-1])
        valid = list(_fields(model)) if model is not None else []
        if key in STEP_VERBS and len(container) == 2 and container[0] == "steps":
            verb = step_verb(_data_at(data, container))
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
    got = _describe_node(found.node) if found.complete else "nothing"
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
            value = str(_data_at(data, loc))
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


def _located(finding: Finding, root: Node, file: str) -> Issue:
    found = _locate(root, finding.loc)
    node = found.key if finding.at_key and found.key is not None else found.node
    line, col = _pos(node)
    return Issue(file, line, col, finding.message, finding.hint, finding.severity)


# ------------------------------------------------------------------ loading


def _sorted(errors: list[FlowError]) -> list[FlowError]:
    return sorted(errors, key=lambda e: (e.file or "", e.line or 0, e.col or 0))


def _sorted_issues(issues: list[Issue]) -> list[Issue]:
    return sorted(issues, key=lambda i: (i.file or "", i.line or 0, i.col or 0))


def _parse(text: str, file: str) -> tuple[Flow, Node]:
    root, data = _compose(text, file)
    if root is None:
        raise FlowLoadError(
            [
                FlowError(
                    "flow file is empty",
                    file=file,
                    line=1,
                    col=1,
                    hint="a flow needs at least name, start and steps",
                )
            ]
        )
    if not isinstance(data, dict):
        line, col = _pos(root)
        raise FlowLoadError(
            [
                FlowError(
                    f"a flow must be a mapping, got {_describe_node(root)}",
                    file=file,
                    line=line,
                    col=col,
                    hint="start with 'name: ...', 'start: ...' and 'steps:'",
                )
            ]
        )
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        errors = [_schema_error(err, root, data, file) for err in _without_echoes(exc.errors())]
        raise FlowLoadError(_sorted(errors)) from None
    return flow, root


def _analyse(
    text: str, file: str, known_tools: set[str] | None = None
) -> tuple[Flow, Node, list[Issue]]:
    """Parse (raising `FlowLoadError` on syntax and schema errors), then lint."""
    flow, root = _parse(text, file)
    issues = [_located(f, root, file) for f in lint_flow(flow, known_tools)]
    return flow, root, issues


def _load(text: str, file: str) -> tuple[Flow, Node]:
    flow, root, issues = _analyse(text, file)
    errors = [issue.to_error() for issue in issues if issue.severity == "error"]
    if errors:
        raise FlowLoadError(_sorted(errors))
    return flow, root


def load_flow_text(text: str, file: str = "<string>") -> Flow:
    """Parse and validate one flow; raises `FlowLoadError` (warnings are not raised)."""
    return _load(text, file)[0]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FlowLoadError(
            [FlowError(f"not UTF-8 text ({exc.reason})", file=str(path), hint="save as UTF-8")]
        ) from None
    except OSError as exc:
        raise FlowLoadError([FlowError(f"cannot read: {exc.strerror}", file=str(path))]) from None


def load_flow(path: str | Path) -> Flow:
    """Load one flow file; raises `FlowLoadError`."""
    path = Path(path)
    return load_flow_text(_read(path), str(path))


def _flow_refs(flow: Flow) -> list[tuple[Loc, FlowRef]]:
    links = [(loc, target) for _, loc, target in flow.links()]
    if flow.on_error is not None:
        links.append((("on_error",), flow.on_error))
    return [((*loc, "flow"), target) for loc, target in links if isinstance(target, FlowRef)]


def _duplicate_name(flow: Flow, root: Node, file: str, other: str) -> Issue:
    line, col = _pos(_locate(root, ("name",)).node)
    return Issue(
        file,
        line,
        col,
        f"flow name '{flow.name}' is already used by {other}",
        "give every flow a unique name",
    )


def load_flows(directory: str | Path) -> dict[str, Flow]:
    """Load every `*.yaml`/`*.yml` in `directory` (not recursive, `routes.yaml` aside),
    keyed by flow name.

    All files are checked before raising, so one run reports every broken file; flow
    names must be unique and `{flow: name}` targets must name a loaded flow.
    """
    directory = Path(directory)
    errors: list[FlowError] = []
    loaded: dict[str, tuple[Flow, Node, str]] = {}
    if not directory.is_dir():
        raise FlowLoadError([FlowError("not a directory of flows", file=str(directory))])
    paths = sorted(p for p in directory.iterdir() if _is_flow_file(p))
    for path in paths:
        file = str(path)
        try:
            flow, root = _load(_read(path), file)
        except FlowLoadError as exc:
            errors.extend(exc.errors)
            continue
        if flow.name in loaded:
            errors.append(_duplicate_name(flow, root, file, loaded[flow.name][2]).to_error())
            continue
        loaded[flow.name] = (flow, root, file)
    for flow, root, file in loaded.values():
        for loc, target in _flow_refs(flow):
            if target.flow not in loaded:
                finding = Finding(
                    loc,
                    f"flow '{target.flow}' does not exist in {directory}",
                    suggest(target.flow, loaded, "flows"),
                )
                errors.append(_located(finding, root, file).to_error())
    if errors:
        raise FlowLoadError(_sorted(errors))
    return {name: flow for name, (flow, _, _) in loaded.items()}


def _flow_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            files.extend(sorted(p for p in entry.iterdir() if _is_flow_file(p)))
        else:
            files.append(entry)
    return list(dict.fromkeys(files))


def _sibling_names(files: Sequence[Path]) -> set[str]:
    """Names of the other flows beside `files`: what `{flow: x}` may hand over to.

    Checking one file of a directory must not call its hand-overs to the others
    unknown; those files are only read for their name, their own problems are theirs.
    """
    names: set[str] = set()
    checked = {f.resolve() for f in files}
    for directory in {f.parent for f in files}:
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if not _is_flow_file(path) or path.resolve() in checked:
                continue
            try:
                data = yaml.load(path.read_text(encoding="utf-8"), Loader=_FlowYamlLoader)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                names.add(data["name"])
    return names


def check_paths(paths: Iterable[str | Path], known_tools: set[str] | None = None) -> list[Issue]:
    """Every error and warning in the given flow files and directories, sorted; raises
    nothing (an unreadable or unparsable file is reported as an error like any other).

    Beyond what loading checks: flow names are unique across the files, `{flow: x}`
    names a flow among them (or beside them), and with `known_tools` every declared
    tool exists.
    """
    files = _flow_files(paths)
    issues: list[Issue] = []
    loaded: dict[str, tuple[Flow, Node, str]] = {}
    for path in files:
        file = str(path)
        try:
            flow, root, found = _analyse(_read(path), file, known_tools)
        except FlowLoadError as exc:
            issues.extend(Issue.from_error(e) for e in exc.errors)
            continue
        issues.extend(found)
        if flow.name in loaded:
            issues.append(_duplicate_name(flow, root, file, loaded[flow.name][2]))
            continue
        loaded[flow.name] = (flow, root, file)
    names = set(loaded) | _sibling_names(files)
    for flow, root, file in loaded.values():
        for loc, target in _flow_refs(flow):
            if target.flow not in names:
                finding = Finding(
                    loc,
                    f"flow '{target.flow}' does not exist",
                    suggest(target.flow, names, "flows"),
                )
                issues.append(_located(finding, root, file))
    return _sorted_issues(issues)
