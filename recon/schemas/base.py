"""The base of every answer, payload and record the project writes as JSON.

Field names are snake_case in Python and camelCase on the wire (the old job's keys);
money is `Decimal` in memory and its exact plain-notation string in JSON, never a float.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, WithJsonSchema
from pydantic.alias_generators import to_camel


class Shape(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    # Fields whose values are JSON-ready already and large (a run's per-change details):
    # `dump` hands them over as they are instead of copying them element by element.
    raw_fields: ClassVar[frozenset[str]] = frozenset()

    def dump(self, *, exclude: set[str] | None = None) -> dict[str, Any]:
        """JSON-ready, camelCase keys, in field order (what every writer stores or sends)."""
        skip = exclude or set()
        if not self.raw_fields:
            return self.model_dump(mode="json", by_alias=True, exclude=skip)
        data = self.model_dump(mode="json", by_alias=True, exclude=skip | self.raw_fields)
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            key = info.alias or name
            if name in self.raw_fields and name not in skip:
                out[key] = getattr(self, name)
            elif key in data:
                out[key] = data[key]
        return out


def _exact(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal: {value!r}") from None
        if number.is_finite():
            return number
    raise ValueError("a decimal must be given as a Decimal or a finite decimal string")


def _plain(value: Decimal) -> str:
    # format 'f': plain notation, never exponent (str(Decimal('1E-7')) is '1E-7').
    return format(value, "f")


ExactDecimal = Annotated[
    Decimal,
    PlainValidator(_exact),
    PlainSerializer(_plain, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "decimal", "examples": ["123.4500"]}),
]


def _iso(value: datetime) -> str:
    # isoformat ("+00:00"), as the journal has always written, not pydantic's "Z".
    return value.isoformat()


IsoDatetime = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str, when_used="json"),
]
