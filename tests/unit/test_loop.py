"""`ivr serve`'s event loop choice (IVR_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from ivr.config import Settings
from ivr.errors import ConfigError
from ivr.server.loop import loop_factory, run


def test_auto_runs_on_uvloop_where_installed() -> None:
    pytest.importorskip("uvloop")

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert run(which(), "auto") == "uvloop"
    assert run(which(), "asyncio") == "asyncio"


def test_missing_uvloop_falls_back_unless_insisted_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails as if not installed
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ConfigError, match="IVR_EVENT_LOOP"):
        Settings(event_loop="tokio").validate()
