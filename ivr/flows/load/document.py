"""Flow YAML as nodes that remember where they are: parsing with YAML 1.2 words, syntax
errors worded for authors, duplicate keys, and locations in the document (`("steps",
"menu", "next")`) turned into `file:line:col`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ivr.errors import FlowError
from ivr.flows.check import Finding, Issue
from ivr.flows.load.errors import FlowLoadError
from ivr.flows.model import Loc

__all__ = [
    "FlowYamlLoader",
    "Found",
    "by_position",
    "compose",
    "data_at",
    "describe_node",
    "locate",
    "located",
    "pos",
]


class FlowYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: `no`, `on`, `yes` stay words, and no timestamps.

    Authors write choice words like `[yes, no]` and step names like `on`; YAML 1.1
    would silently turn those into booleans. Likewise `set: {day: 2026-11-24}` stays
    text, which the date slot then parses, instead of a date no text field accepts.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
FlowYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
FlowYamlLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def pos(node: Node) -> tuple[int, int]:
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
                    first_line, _ = pos(first_at[key.value])
                    line, col = pos(key)
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


def compose(text: str, file: str) -> tuple[Node | None, Any]:
    loader = FlowYamlLoader(text)
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


@dataclass(frozen=True, slots=True)
class Found:
    node: Node  # the deepest node reached
    key: Node | None  # the key node of the last mapping entry stepped into
    complete: bool  # whether the whole location resolved


def locate(root: Node, loc: Loc) -> Found:
    node, key = root, None
    for elem in loc:
        if elem == "[key]" and key is not None:
            return Found(key, key, True)
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
                return Found(node, key, False)
            key, node = entry
        elif isinstance(node, SequenceNode) and isinstance(elem, int):
            if not 0 <= elem < len(node.value):
                return Found(node, key, False)
            key, node = None, node.value[elem]
        else:
            return Found(node, key, False)
    return Found(node, key, True)


def data_at(data: Any, loc: Loc) -> Any:
    for elem in loc:
        if isinstance(data, dict) and elem in data:
            data = data[elem]
        elif isinstance(data, list) and isinstance(elem, int) and 0 <= elem < len(data):
            data = data[elem]
        else:
            return None
    return data


def describe_node(node: Node) -> str:
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


def located(finding: Finding, root: Node, file: str) -> Issue:
    """`finding` at its line and column in `file` (composed as `root`)."""
    found = locate(root, finding.loc)
    node = found.key if finding.at_key and found.key is not None else found.node
    line, col = pos(node)
    return Issue(file, line, col, finding.message, finding.hint, finding.severity)


class _Placed(Protocol):
    @property
    def file(self) -> str | None: ...

    @property
    def line(self) -> int | None: ...

    @property
    def col(self) -> int | None: ...


P = TypeVar("P", bound=_Placed)


def by_position(items: Iterable[P]) -> list[P]:
    """Errors or issues by file, line and column (unlocated ones first)."""
    return sorted(items, key=lambda i: (i.file or "", i.line or 0, i.col or 0))
