"""YAML flow files -> `Flow`, with every error located at `file:line:col`.

Errors: the `load_*` functions raise `FlowLoadError`, a `FlowError` located at the first
problem whose `.errors` lists all problems found (sorted by position) and whose `str()`
shows them one per line. Warnings do not stop a load; `check_paths` (what `ivr flows
check` prints) returns errors and warnings alike as `Issue`s and raises nothing.
Loading has no side effects: nothing is registered or cached except compiled templates,
so a broken file never disturbs flows already loaded.

Modules: `errors` (FlowLoadError), `document` (YAML nodes with positions, syntax errors,
locations), `schema_errors` (pydantic errors worded), `loader` (one flow, in phases),
`files` (many files: `load_flows`, `check_paths`). The meaning checks are
`ivr.flows.check`, which this package calls and which never calls back. Import from
`ivr.flows.load`.
"""

from __future__ import annotations

from ivr.flows.load.document import FlowYamlLoader
from ivr.flows.load.errors import FlowLoadError
from ivr.flows.load.files import check_paths, flow_files_in, load_flows
from ivr.flows.load.loader import load_flow, load_flow_text

__all__ = [
    "FlowLoadError",
    "FlowYamlLoader",
    "check_paths",
    "flow_files_in",
    "load_flow",
    "load_flow_text",
    "load_flows",
]
