"""One flow, from YAML text or a file to a `Flow`, in phases that each only start when
the one before succeeded:
1. YAML syntax (composed to nodes that remember their positions) and duplicate keys.
2. Schema: pydantic validates the plain data; each error's location is walked back
   through the node tree to the line and column of the offending key or value.
3. Meaning: the checks of `ivr.flows.check` over the valid model, located the same way.
A flow with any error is refused (`FlowLoadError`); warnings do not stop a load.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from yaml.nodes import Node

from ivr.errors import FlowError
from ivr.flows.check import Issue, lint_flow
from ivr.flows.load.document import by_position, compose, describe_node, located, pos
from ivr.flows.load.errors import FlowLoadError
from ivr.flows.load.schema_errors import schema_errors
from ivr.flows.model import Flow

__all__ = ["analyse", "load_flow", "load_flow_text", "load_text", "read"]


def _parse(text: str, file: str) -> tuple[Flow, Node]:
    root, data = compose(text, file)
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
        line, col = pos(root)
        raise FlowLoadError(
            [
                FlowError(
                    f"a flow must be a mapping, got {describe_node(root)}",
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
        raise FlowLoadError(by_position(schema_errors(exc.errors(), root, data, file))) from None
    return flow, root


def analyse(
    text: str, file: str, known_tools: set[str] | None = None
) -> tuple[Flow, Node, list[Issue]]:
    """Parse (raising `FlowLoadError` on syntax and schema errors), then check: the flow,
    its node tree, and every error and warning of the meaning checks."""
    flow, root = _parse(text, file)
    issues = [located(f, root, file) for f in lint_flow(flow, known_tools)]
    return flow, root, issues


def load_text(text: str, file: str) -> tuple[Flow, Node]:
    """Like `analyse`, but any error raises `FlowLoadError` and warnings are dropped."""
    flow, root, issues = analyse(text, file)
    errors = [issue.to_error() for issue in issues if issue.severity == "error"]
    if errors:
        raise FlowLoadError(by_position(errors))
    return flow, root


def load_flow_text(text: str, file: str = "<string>") -> Flow:
    """Parse and validate one flow; raises `FlowLoadError` (warnings are not raised)."""
    return load_text(text, file)[0]


def read(path: Path) -> str:
    """A flow file's text; raises `FlowLoadError` when it cannot be read as UTF-8."""
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
    return load_flow_text(read(path), str(path))
