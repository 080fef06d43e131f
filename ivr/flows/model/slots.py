"""Slot definitions: the typed answers a flow declares under `slots:` (see ivr.flows.slots
for how answers are parsed, read back and listened for)."""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

from pydantic import Field, field_validator, model_validator

from ivr.errors import InvalidValue
from ivr.flows.model.base import FlowModel, Text

__all__ = ["SLOT_TYPES", "ChoiceOption", "SlotDef", "SlotType"]

SlotType = Literal["choice", "yes_no", "digits", "number", "date", "time", "phone", "text"]
SLOT_TYPES: Final[tuple[str, ...]] = get_args(SlotType)


class ChoiceOption(FlowModel):
    """One allowed answer of a choice slot: stored as `value`, said as any of `words`."""

    value: Text
    words: tuple[Text, ...] = ()
    key: str | None = Field(default=None, pattern=r"^[0-9*]{1,4}$")

    @model_validator(mode="before")
    @classmethod
    def _words_default_to_value(cls, data: Any) -> Any:
        # Most options are said as they are stored ("cleaning"); only synonyms need listing.
        if isinstance(data, dict) and not data.get("words") and data.get("value") is not None:
            return {**data, "words": (str(data["value"]),)}
        return data


class SlotDef(FlowModel):
    """A slot's type and constraints, as written in a flow."""

    type: SlotType
    choices: tuple[ChoiceOption, ...] = ()
    length: int | None = Field(default=None, ge=1, le=32)
    min_length: int | None = Field(default=None, ge=1, le=32)
    max_length: int | None = Field(default=None, ge=1, le=32)
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    description: str = ""
    # What the embedded recognizer listens for. `phrases`: exactly these answers (parsing
    # still by type). Dates and times default to a compact grammar of what callers of a
    # booking line say (relative days and weekdays; business hours), which the phone path
    # recognizes far better than the full grammar (`grammar: full`) of every date and time.
    phrases: tuple[str, ...] = ()
    grammar: Literal["compact", "full"] = "compact"

    @field_validator("choices", mode="before")
    @classmethod
    def _bare_choices(cls, value: Any) -> Any:
        # `choices: [cleaning, repair]` is the common case; spell it out for the model.
        if isinstance(value, list | tuple):
            return tuple({"value": v} if isinstance(v, str | int) else v for v in value)
        return value

    @model_validator(mode="after")
    def _check(self) -> SlotDef:
        def misplaced(field: str, owner: str) -> InvalidValue:
            return InvalidValue(f"`{field}` applies to {owner} slots, not {self.type}")

        if self.type == "choice":
            if not self.choices:
                raise InvalidValue("a choice slot needs at least one entry in `choices`")
            values = [c.value for c in self.choices]
            if len(set(values)) != len(values):
                raise InvalidValue(f"choice values must be unique: {values}")
            keys = [c.key for c in self.choices if c.key is not None]
            if len(set(keys)) != len(keys):
                raise InvalidValue(f"choice keys must be unique: {keys}")
        elif self.choices:
            raise misplaced("choices", "choice")
        if self.type != "digits":
            for name in ("length", "min_length", "max_length"):
                if getattr(self, name) is not None:
                    raise misplaced(name, "digits")
        elif self.length is not None and (
            self.min_length is not None or self.max_length is not None
        ):
            raise InvalidValue("give either `length` or `min_length`/`max_length`, not both")
        elif (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise InvalidValue("`min_length` is greater than `max_length`")
        if self.grammar != "compact" and self.type not in ("date", "time"):
            raise misplaced("grammar", "date and time")
        if self.type != "number":
            for name in ("min", "max"):
                if getattr(self, name) is not None:
                    raise misplaced(name, "number")
        elif self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidValue("`min` is greater than `max`")
        return self
