"""A tiny `ivr bench load` against a real server process: the command runs end to end,
greets every call and prints and writes its figures (no figure is judged here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.cli.main import main


def test_a_tiny_load_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "load.json"
    with pytest.raises(SystemExit) as exited:
        main(["bench", "load", "--calls", "3", "--seconds", "3", "--json", str(path)])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "load generator: one process on" in out
    assert "reproduce: ivr bench load --calls 3 --seconds 3" in out
    run = json.loads(path.read_text())["runs"][0]
    assert (run["server"], run["calls"], run["greeted"], run["ended_early"]) == (
        "ivr serve", 3, 3, 0)
    assert run["frames_per_call_s"] > 0 and run["ticks"] > 0
