"""What is wrong with a flow beyond its schema: small checks, each a pure function.

Every check takes a valid `Flow` (the schema already passed) and returns `Finding`s:
a location in the flow document (`("steps", "menu", "next")`), a message, a fix and a
severity. `ivr.flows.load` turns locations into `file:line:col` (`Issue`); loading refuses a
flow with any error, and `ivr flows check` (`check_paths`) prints errors and warnings.

Checks come in two groups. `validate_*` look at one thing at a time (targets exist,
templates compile, tools are declared). `lint_*` walk the step graph, and only run when
the graph itself is sound (start and every target exist):
- `lint_unreachable`: a step no path from `start` reaches (an error: it is dead text
  that someone believes is live).
- `lint_way_out`: steps from which the call can never end: no hangup, transfer, hand-over
  or last step is reachable from them (an ask that runs out of reprompts without a
  fallback does end the call, but as a failure, so it does not count as a way out).
- `lint_slot_reads`: a dataflow over the graph. A slot (or `vars` result) is *maybe set*
  at a step if some path from `start` sets it, *surely set* if every path does. Reading
  one that no path sets is an error; one that only some paths set is a warning.

This package never reads files and never imports `ivr.flows.load` (which imports it).
Modules: `diagnostics` (Finding, Issue, wording), `validate` (one thing at a time),
`names` (slots, tools, template names), `graph` (reachability, ways out), `dataflow`
(reads before sets), `confusion` (answers that sound alike), `lint` (`lint_flow`, all
of them in order but `lint_confusable`). Import from
`ivr.flows.check`.
"""

from __future__ import annotations

from ivr.flows.check.confusion import lint_confusable
from ivr.flows.check.dataflow import lint_slot_reads
from ivr.flows.check.diagnostics import Finding, Issue, Severity
from ivr.flows.check.graph import lint_unreachable, lint_way_out
from ivr.flows.check.lint import GRAPH_CHECKS, SEMANTIC_CHECKS, Check, lint_flow
from ivr.flows.check.names import validate_slots, validate_templates, validate_tools
from ivr.flows.check.validate import (
    validate_asks,
    validate_choices,
    validate_loops,
    validate_start,
    validate_targets,
    validate_timezone,
    validate_transfers,
)

__all__ = [
    "GRAPH_CHECKS",
    "SEMANTIC_CHECKS",
    "Check",
    "Finding",
    "Issue",
    "Severity",
    "lint_confusable",
    "lint_flow",
    "lint_slot_reads",
    "lint_unreachable",
    "lint_way_out",
    "validate_asks",
    "validate_choices",
    "validate_loops",
    "validate_slots",
    "validate_start",
    "validate_targets",
    "validate_templates",
    "validate_timezone",
    "validate_tools",
    "validate_transfers",
]
