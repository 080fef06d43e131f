"""`FlowLoadError`: every problem found in flow files, raised as one error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ivr.errors import FlowError, InvalidValue

__all__ = ["FlowLoadError"]


class FlowLoadError(FlowError):
    """One or more problems in flow files; located at the first, `.errors` has them all."""

    def __init__(self, errors: Sequence[FlowError]) -> None:
        if not errors:
            raise InvalidValue("FlowLoadError needs at least one error")
        first = errors[0]
        more = len(errors) - 1
        message = first.message + (f" (and {more} more)" if more else "")
        super().__init__(message, file=first.file, line=first.line, col=first.col, hint=first.hint)
        self.errors: list[FlowError] = list(errors)

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce would call cls(message) and lose the list.
        return (type(self), (self.errors,))

    def __str__(self) -> str:
        return "\n".join(FlowError.__str__(e) for e in self.errors)
