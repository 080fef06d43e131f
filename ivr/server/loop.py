"""The event loop `ivr serve` runs on: uvloop where it is installed, else asyncio's.

At a thousand calls the loop itself is a large share of the server's CPU: every inbound
media frame is a socket read, a protocol callback and a task step, every outbound one a
socket write (`ivr bench load` measures it). uvloop does that work in C; everything else
is the same code. `IVR_EVENT_LOOP=asyncio` turns it off (to compare, or to debug with
asyncio's debug mode); `uvloop` insists on it and fails when it is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ivr.errors import ConfigError

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop `choice` names (None: asyncio's default)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("IVR_EVENT_LOOP=uvloop but uvloop is not installed "
                              "(pip install uvloop), or set IVR_EVENT_LOOP=auto") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
