"""Column types that keep money exact and times zoned on both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine
from typing_extensions import override


class ExactDecimal(TypeDecorator[Decimal]):
    """A `Decimal` that reads back as the same string it was written as.

    PostgreSQL: unconstrained NUMERIC, which keeps the scale it was given ("1.50" stays
    "1.50", 30-digit cost bases stay whole). SQLite has no decimal type and SQLAlchemy's
    Numeric would go through float, so there it is stored as plain-notation text.
    """

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(asdecimal=True))
        return dialect.type_descriptor(String(80))

    @override
    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal, got {type(value).__name__}")
        return value if dialect.name == "postgresql" else format(value, "f")

    @override
    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        # The PostgreSQL driver already returns NUMERIC as Decimal: skip the per-cell Python
        # call (a book of 100k positions has 1.3M of them).
        if dialect.name == "postgresql":
            return self.load_dialect_impl(dialect).result_processor(dialect, coltype)
        return super().result_processor(dialect, coltype)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @override
    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        return value.astimezone(UTC)

    @override
    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Document = JSON().with_variant(JSONB(), "postgresql")


def dumps(document: Any) -> str:
    """JSON text of a journal document (the engines' `json_serializer`, the COPY rows).

    orjson, not `json`: a 10k-position run writes a ≈ 390 KB event payload and 1,200
    change documents, 9 ms with `json.dumps` and under 1 ms with orjson. Like `json` it
    refuses a `Decimal` (money is text by the time it reaches a document).
    """
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS).decode()
