"""The flows a server runs: routing, hot reload, graphs, the authoring commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ivr.cli.main import main
from ivr.flows.library import FlowLibrary
from ivr.flows.mermaid import mermaid
from tests.conftest import ROOT

FLOWS = ROOT / "flows"


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    for name in ("demo.yaml", "main_menu.yaml", "order_status.yaml", "dental_booking.yaml",
                 "routes.yaml"):
        shutil.copy(FLOWS / name, tmp_path / name)
    return tmp_path


def test_routing_parameter_then_called_number_then_default(library_dir: Path) -> None:
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()
    assert lib.pick("order_status", "+15550100002").name == "order_status"
    assert lib.pick(None, "+15550100002").name == "main_menu"
    assert lib.pick("", "+15550100010").name == "dental_booking"
    assert lib.pick("no_such_flow", "+19999999999").name == "demo"


def test_reload_picks_up_a_change_and_live_calls_keep_their_version(library_dir: Path) -> None:
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()
    live = lib.flows["demo"]  # a call in progress holds this object
    path = library_dir / "demo.yaml"
    path.write_text(path.read_text().replace("Thanks for calling Acme.", "Hello again."))
    assert lib.reload() is True
    assert lib.flows["demo"].steps["greet"].say == "Hello again."  # type: ignore[union-attr]
    assert live.steps["greet"].say == "Thanks for calling Acme."  # type: ignore[union-attr]


def test_a_broken_file_never_replaces_a_working_one(library_dir: Path) -> None:
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()
    before = lib.flows["demo"]
    (library_dir / "demo.yaml").write_text("name: demo\nstart: nowhere\nsteps: {}\n")
    lib.reload()
    assert lib.flows["demo"] is before
    assert lib.rejected == 1


def test_a_removed_file_drops_its_flow_and_routes_reload(library_dir: Path) -> None:
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()
    (library_dir / "order_status.yaml").unlink()
    (library_dir / "routes.yaml").write_text('numbers:\n  "+15550100002": demo\n')
    assert lib.reload() is True
    assert "order_status" not in lib.flows
    assert lib.pick(None, "+15550100002").name == "demo"


def test_graph_is_mermaid_with_every_step() -> None:
    lib = FlowLibrary(FLOWS, default="demo")
    lib.load()
    flow = lib.flows["dental_booking"]
    text = mermaid(flow)
    assert text.startswith("flowchart TD")
    for step in flow.steps:
        assert f"s_{step}" in text
    assert "transfer operator" in text


def test_flows_check_reports_errors_with_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstart: a\nsteps:\n  a: {say: hi, next: b}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["flows", "check", str(bad)])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert f"{bad}:4:" in out and "'b'" in out


def test_flows_check_passes_on_shipped_flows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["flows", "check", *map(str, sorted(FLOWS.glob("*.yaml")))])
    assert exit_.value.code == 0, capsys.readouterr().out
