"""The JSON Schema of flow files, for editors: `python -m ivr.flows.schema [--check] [PATH]`.

The schema is generated from the pydantic models (`ivr.flows.model.Flow`), so it cannot
drift from what the loader accepts; the copy committed as `flows/schema.json` is what
a flow's first line points an editor at::

    # yaml-language-server: $schema=schema.json

Without arguments the command rewrites `flows/schema.json`; `--check` only compares and
exits 1 when the file is missing or stale (a test does the same). The schema is a little
stricter than the loader in one way: YAML numbers where text is expected (`key: 1`) are
accepted by the loader but flagged by the editor, which nudges authors to quote them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ivr.flows.model import Flow

__all__ = ["SCHEMA_PATH", "flow_schema", "main", "schema_text"]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "flows" / "schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def flow_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one flow file."""
    schema = Flow.model_json_schema()
    return {
        "$schema": DIALECT,
        "title": "ivr call flow",
        "description": "A YAML call flow of ivr; see ivr/flows/model/__init__.py for the format.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def schema_text() -> str:
    """The schema as committed: stable key order, two-space indents, final newline."""
    return json.dumps(flow_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ivr.flows.schema", description="write the JSON Schema of flow files"
    )
    parser.add_argument("path", nargs="?", type=Path, default=SCHEMA_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    path: Path = args.path
    text = schema_text()
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            print(f"{path} is out of date: run python -m ivr.flows.schema", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
