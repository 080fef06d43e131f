"""`lint_flow`: every check of one valid flow (the schema already passed), in order.

The one-at-a-time checks always run; the graph checks (unreachable, no way out, reads
before sets) only when the graph is sound, since with a missing step they would only
echo the one real mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from ivr.flows.check.dataflow import lint_slot_reads
from ivr.flows.check.diagnostics import Finding
from ivr.flows.check.graph import lint_unreachable, lint_way_out
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
from ivr.flows.model import Flow

__all__ = ["GRAPH_CHECKS", "SEMANTIC_CHECKS", "Check", "lint_flow"]

Check: TypeAlias = Callable[[Flow], list[Finding]]

SEMANTIC_CHECKS: tuple[Check, ...] = (
    validate_start,
    validate_targets,
    validate_choices,
    validate_asks,
    validate_slots,
    validate_timezone,
    validate_templates,
    validate_transfers,
    validate_loops,
)
GRAPH_CHECKS: tuple[Check, ...] = (lint_unreachable, lint_way_out, lint_slot_reads)


def lint_flow(flow: Flow, known_tools: set[str] | None = None) -> list[Finding]:
    """Every finding for one flow, errors and warnings."""
    findings = [f for check in SEMANTIC_CHECKS for f in check(flow)]
    findings += validate_tools(flow, known_tools)
    if not validate_start(flow) and not validate_targets(flow):
        findings += [f for check in GRAPH_CHECKS for f in check(flow)]
    return findings
