"""Many flow files at once: a directory of flows for the server (`load_flows`), and any
files and directories for `ivr flows check` (`check_paths`).

Beyond what loading one file checks, both check the files together: flow names are
unique, and every `{flow: x}` hand-over names a flow that exists. Every file is read
before anything is reported, so one run tells every broken file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

import yaml
from yaml.nodes import Node

from ivr.errors import FlowError
from ivr.flows.check import Finding, Issue, lint_confusable
from ivr.flows.check.diagnostics import suggest
from ivr.flows.load.document import FlowYamlLoader, by_position, located
from ivr.flows.load.errors import FlowLoadError
from ivr.flows.load.loader import analyse, load_text, read
from ivr.flows.model import Flow, FlowRef, Loc

__all__ = ["FLOW_SUFFIXES", "NOT_FLOWS", "check_paths", "flow_files_in", "load_flows"]

FLOW_SUFFIXES = (".yaml", ".yml")
# YAML files that live among the flows but are not flows (the called-number routing
# table of `ivr.flows.library`); reading a directory of flows skips them.
NOT_FLOWS = frozenset({"routes.yaml", "routes.yml"})

_Loaded = dict[str, tuple[Flow, Node, str]]  # flow name -> (flow, its nodes, its file)


def _is_flow_file(path: Path) -> bool:
    return path.suffix in FLOW_SUFFIXES and path.name not in NOT_FLOWS and path.is_file()


def flow_files_in(directory: Path) -> list[Path]:
    """The flow files of `directory` (not recursive), sorted; none if it is no directory."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _is_flow_file(p))


def _gather(
    files: Iterable[Path], analysed: Callable[[str, str], tuple[Flow, Node, list[Issue]]]
) -> tuple[_Loaded, list[Issue]]:
    """Each file through `analysed`; the flows by name, and every issue found (a file's
    own, and a second flow of the same name)."""
    issues: list[Issue] = []
    loaded: _Loaded = {}
    for path in files:
        file = str(path)
        try:
            flow, root, found = analysed(read(path), file)
        except FlowLoadError as exc:
            issues.extend(Issue.from_error(e) for e in exc.errors)
            continue
        issues.extend(found)
        if flow.name in loaded:
            finding = Finding(
                ("name",),
                f"flow name '{flow.name}' is already used by {loaded[flow.name][2]}",
                "give every flow a unique name",
            )
            issues.append(located(finding, root, file))
            continue
        loaded[flow.name] = (flow, root, file)
    return loaded, issues


def _flow_refs(flow: Flow) -> list[tuple[Loc, FlowRef]]:
    return [((*loc, "flow"), t) for loc, t in flow.targets() if isinstance(t, FlowRef)]


def _missing_flows(loaded: _Loaded, names: Collection[str], where: str = "") -> list[Issue]:
    """Hand-overs `{flow: x}` in `loaded` to an `x` not among `names`."""
    issues: list[Issue] = []
    for flow, root, file in loaded.values():
        for loc, target in _flow_refs(flow):
            if target.flow not in names:
                finding = Finding(
                    loc,
                    f"flow '{target.flow}' does not exist{where}",
                    suggest(target.flow, names, "flows"),
                )
                issues.append(located(finding, root, file))
    return issues


def load_flows(directory: str | Path) -> dict[str, Flow]:
    """Load every `*.yaml`/`*.yml` in `directory` (not recursive, `routes.yaml` aside),
    keyed by flow name; raises `FlowLoadError` with the errors of every file.

    Flow names must be unique and `{flow: name}` targets must name a loaded flow.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FlowLoadError([FlowError("not a directory of flows", file=str(directory))])

    def errors_only(text: str, file: str) -> tuple[Flow, Node, list[Issue]]:
        return (*load_text(text, file), [])

    loaded, issues = _gather(flow_files_in(directory), errors_only)
    issues += _missing_flows(loaded, list(loaded), f" in {directory}")
    if issues:
        raise FlowLoadError(by_position(issue.to_error() for issue in issues))
    return {name: flow for name, (flow, _, _) in loaded.items()}


def _flow_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for entry in map(Path, paths):
        files.extend(flow_files_in(entry) if entry.is_dir() else [entry])
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
                data = yaml.load(path.read_text(encoding="utf-8"), Loader=FlowYamlLoader)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                names.add(data["name"])
    return names


def check_paths(paths: Iterable[str | Path], known_tools: set[str] | None = None) -> list[Issue]:
    """Every error and warning in the given flow files and directories (their
    `*.yaml`/`*.yml`), sorted; raises nothing (an unreadable or unparsable file is
    reported as an error like any other). `ivr flows check` exits 1 when any issue has
    severity "error".

    `{flow: x}` may name a flow among the files or beside them; with `known_tools` (the
    registry's names) every declared tool must exist, None skips that. Beyond what a load
    checks, answers a step listens for that sound alike on the phone are warned about
    (`lint_confusable`).
    """
    files = _flow_files(paths)

    def with_warnings(text: str, file: str) -> tuple[Flow, Node, list[Issue]]:
        flow, root, issues = analyse(text, file, known_tools)
        # Only here, not in every load: it reads the pronunciation dictionary.
        issues += [located(f, root, file) for f in lint_confusable(flow)]
        return flow, root, issues

    loaded, issues = _gather(files, with_warnings)
    issues += _missing_flows(loaded, sorted(set(loaded) | _sibling_names(files)))
    return by_position(issues)
