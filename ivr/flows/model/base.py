"""What every model of a flow shares: frozen, strict about keys, numbers read as text."""

from __future__ import annotations

from typing import Annotated, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FlowModel", "Loc", "Text", "Value"]

# A path into the flow document, as pydantic reports it (`("steps", "menu", "next")`).
Loc: TypeAlias = tuple[str | int, ...]


class FlowModel(BaseModel):
    # Flows are shared by concurrent calls, hence frozen; numbers are accepted as text
    # because YAML turns `key: 1` or `say: 42` into ints behind the author's back.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


Text = Annotated[str, Field(min_length=1)]

# A `set` or `args` value: a template (text) or a YAML literal kept as it is.
Value: TypeAlias = bool | int | float | str
