"""Tools the conversation can call (bookings, lookups) and the registry that runs them.

`default_registry(db_path)` has every built-in tool; `seed(db_path)` fills the demo data.
"""

from ivr.tools.base import Tool, ToolContext, ToolError, ToolResult
from ivr.tools.registry import ToolRegistry, default_registry
from ivr.tools.seed import seed

__all__ = [
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "default_registry",
    "seed",
]
