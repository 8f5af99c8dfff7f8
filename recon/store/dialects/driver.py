"""PostgreSQL's fast paths below SQLAlchemy: `COPY` in and `fetchall` out, with psycopg.

`COPY … FROM STDIN` is a driver feature SQLAlchemy does not wrap: the rows are formatted by
psycopg's C row writer and travel in COPY's text format, which the server parses with each
column's own input function (a `Decimal` keeps its scale, a JSON document is checked as
JSONB), exactly as for a bound parameter.

Reads: SQLAlchemy iterates a result one `fetchone()` and one `Row` at a time; the driver's
`fetchall()` builds every tuple in one C call. Only for tables whose column types add
nothing to the driver's values on PostgreSQL (ours: `ExactDecimal` is the driver's
`Decimal` there), so both paths return the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Column, MetaData, Select, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable, DropTable

Row = Sequence[Any]


def fetch_all(
    session: Session, query: Select[Any], parameters: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """`query`'s rows as the driver's plain tuples (no SQLAlchemy result processing)."""
    statement = _compiled(query, session.get_bind().dialect)
    with _cursor(session, statement) as cursor:
        cursor.execute(statement, dict(parameters))
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


def copy_rows(session: Session, table: Table, names: Sequence[str], rows: Iterable[Row]) -> None:
    """Append `rows` (values in the order of `names`) to `table`."""
    preparer = session.get_bind().dialect.identifier_preparer
    columns = ", ".join(preparer.quote(n) for n in names)
    _copy(session, f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN", rows)


@contextmanager
def staged(
    session: Session, table: Table, names: Sequence[str], rows: Iterable[Row]
) -> Iterator[Table]:
    """A temporary table with `names` typed as in `table`, filled with `rows` by COPY.

    Created without constraints, dropped once used (a transaction may stage twice) and in
    any case at commit or rollback: nothing outlives the transaction or is shared.
    """
    stage = _stage(table, tuple(names))
    connection = session.connection()
    connection.execute(CreateTable(stage))
    copy_rows(session, stage, names, rows)
    yield stage
    connection.execute(DropTable(stage))


@cache
def _stage(table: Table, names: tuple[str, ...]) -> Table:
    columns = [Column(n, table.c[n].type, nullable=True) for n in names]
    return Table(
        f"stage_{table.name}",
        MetaData(),
        *columns,
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )


@cache
def _compiled(query: Select[Any], dialect: Any) -> str:
    return str(query.compile(dialect=dialect))


def _copy(session: Session, statement: str, rows: Iterable[Row]) -> None:
    with _cursor(session, statement) as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


@contextmanager
def _cursor(session: Session, statement: str) -> Iterator[Any]:
    """A cursor on the session's own connection (so the statements join its transaction),
    with the driver's errors raised as SQLAlchemy's, as for any other statement
    (`IntegrityError`, …)."""
    dialect = session.get_bind().dialect
    dbapi_error = dialect.loaded_dbapi.Error
    connection: Any = session.connection().connection.driver_connection
    try:
        with connection.cursor() as cursor:
            yield cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi_error, dialect=dialect) from exc
