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


def test_a_routes_file_that_is_not_utf8_is_rejected_and_reloading_goes_on(
    library_dir: Path,
) -> None:
    """A non-UTF-8 routes file keeps the routes loaded last; later changes still load."""
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()
    routes = dict(lib.routes)
    (library_dir / "routes.yaml").write_bytes(b'numbers:\n  "+15550100002": d\xe9mo\n')
    assert lib.reload() is False
    assert lib.routes == routes
    demo = library_dir / "demo.yaml"
    demo.write_text(demo.read_text().replace("Thanks for calling Acme.", "Hello again."))
    (library_dir / "routes.yaml").write_text('numbers:\n  "+15550100002": demo\n')
    assert lib.reload() is True
    assert lib.flows["demo"].steps["greet"].say == "Hello again."  # type: ignore[union-attr]
    assert lib.pick(None, "+15550100002").name == "demo"


def test_every_flow_file_deleted_keeps_the_last_good_set(library_dir: Path) -> None:
    """Deleting every flow file leaves the flows loaded last in service, and new files
    written afterwards are picked up."""
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()
    before = dict(lib.flows)
    for path in library_dir.glob("*.yaml"):
        if path.name != "routes.yaml":
            path.unlink()
    assert lib.reload() is False
    assert lib.flows == before
    assert lib.pick(None, None).name == "demo"
    assert lib.reload_errors == 1
    shutil.copy(FLOWS / "demo.yaml", library_dir / "demo.yaml")
    assert lib.reload() is True
    assert sorted(lib.flows) == ["demo"]


@pytest.mark.parametrize("how", ["removed", "replaced by a file", "unlistable"])
def test_an_unusable_directory_keeps_the_last_good_set_until_it_is_fixed(
    library_dir: Path, how: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A flow directory removed, replaced by a file or that cannot be listed keeps the
    flows loaded last; once it is back, a reload picks up its flows."""
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()
    before = dict(lib.flows)
    saved = tmp_path_factory.mktemp("saved") / "flows"
    shutil.copytree(library_dir, saved)
    if how == "unlistable":
        # chmod 000 has no effect for root (the tests may run as root): fail the listing.
        def refuse(self: Path) -> object:
            raise PermissionError(13, "Permission denied", str(self))
        monkeypatch.setattr(Path, "iterdir", refuse)
    else:
        shutil.rmtree(library_dir)
        if how == "replaced by a file":
            library_dir.write_text("not a directory\n")
    assert lib.reload() is False
    assert lib.reload() is False  # still degraded: reported once
    assert lib.flows == before
    assert lib.reload_errors == 1
    monkeypatch.undo()
    if library_dir.is_file():
        library_dir.unlink()
    if not library_dir.exists():
        shutil.copytree(saved, library_dir)
    demo = library_dir / "demo.yaml"
    demo.write_text(demo.read_text().replace("Thanks for calling Acme.", "Back again."))
    assert lib.reload() is True
    assert lib.flows["demo"].steps["greet"].say == "Back again."  # type: ignore[union-attr]


def test_an_unexpected_error_in_a_poll_is_logged_and_the_next_poll_works(
    library_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception inside one reload is counted, never raised to the watcher."""
    lib = FlowLibrary(library_dir, default="demo")
    lib.load()

    def boom(path: Path) -> object:
        raise KeyError("surprise")
    monkeypatch.setattr("ivr.flows.library.load_flow", boom)
    demo = library_dir / "demo.yaml"
    demo.write_text(demo.read_text().replace("Thanks for calling Acme.", "Hello again."))
    assert lib.reload() is False
    assert lib.reload_errors == 1
    monkeypatch.undo()
    assert lib.reload() is True
    assert lib.flows["demo"].steps["greet"].say == "Hello again."  # type: ignore[union-attr]
