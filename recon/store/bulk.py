"""Bulk reads and writes on PostgreSQL with the driver alone: `COPY` in, `fetchall` out.

`executemany` sends one statement per row (pipelined, but each one bound, parsed, planned
and executed apart): 1,200 changed positions are 1,200 upserts of 23 parameters. Here the
rows stream in one `COPY … FROM STDIN`, formatted by psycopg's C row writer, and the server
applies them in one statement: straight into an append-only table, or into a staging table
that one `INSERT … ON CONFLICT` or `UPDATE … FROM` applies. Values travel in COPY's text
format, which the server parses with each column's own input function (a `Decimal` keeps
its scale, a JSON document is checked as JSONB), exactly as for a bound parameter.

Reads: SQLAlchemy iterates a result one `fetchone()` and one `Row` at a time; the driver's
`fetchall()` builds every tuple in one C call. Only for tables whose column types add
nothing to the driver's values on PostgreSQL (ours: `ExactDecimal` is the driver's
`Decimal` there), so both paths return the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

Row = Sequence[Any]


def copy_rows(session: Session, table: Table, names: Sequence[str], rows: Iterable[Row]) -> None:
    """Append `rows` (values in the order of `names`) to `table`."""
    statement = f"COPY {_quoted(session, table.name)} ({_columns(session, names)}) FROM STDIN"
    _copy(session, statement, rows)


def read_rows(
    session: Session, table: Table, names: Sequence[str], where: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """`names` of every row of `table` whose columns equal `where`, as plain tuples."""
    q = _quoter(session)
    match = " AND ".join(f"{q(k)} = %({k})s" for k in where) or "TRUE"
    statement = f"SELECT {_columns(session, names)} FROM {q(table.name)} WHERE {match}"  # noqa: S608
    with _driver(session, statement) as cursor:
        cursor.execute(statement, dict(where))
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


def upsert_rows(
    session: Session,
    table: Table,
    names: Sequence[str],
    rows: Iterable[Row],
    *,
    key: Sequence[str],
    keep: Iterable[str] = (),
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Insert `rows`; an existing row (same `key`) takes every column but `key` and `keep`.

    `constants` are the same in every row (the run's timestamp and id).
    """
    constants = dict(constants or {})
    q = _quoter(session)
    every = [*names, *constants]
    assignments = ", ".join(f"{q(n)} = EXCLUDED.{q(n)}" for n in every if n not in {*key, *keep})
    values = ", ".join([q(n) for n in names] + [f"%(c_{n})s" for n in constants])
    with _staged(session, table, names, rows) as stage:
        _execute(
            session,
            f"INSERT INTO {q(table.name)} ({_columns(session, every)}) "  # noqa: S608
            f"SELECT {values} FROM {stage} "
            f"ON CONFLICT ({_columns(session, key)}) DO UPDATE SET {assignments}",
            {f"c_{n}": v for n, v in constants.items()},
        )


def update_rows(
    session: Session,
    table: Table,
    names: Sequence[str],
    rows: Iterable[Row],
    *,
    key: Sequence[str],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """Set the non-key columns of the row matching each row's `key` values."""
    constants = dict(constants or {})
    q = _quoter(session)
    assignments = [f"{q(n)} = s.{q(n)}" for n in names if n not in key]
    assignments += [f"{q(n)} = %(c_{n})s" for n in constants]
    match = " AND ".join(f"t.{q(n)} = s.{q(n)}" for n in key)
    with _staged(session, table, names, rows) as stage:
        _execute(
            session,
            f"UPDATE {q(table.name)} AS t SET {', '.join(assignments)} "  # noqa: S608
            f"FROM {stage} AS s WHERE {match}",
            {f"c_{n}": v for n, v in constants.items()},
        )


@contextmanager
def _staged(
    session: Session, table: Table, names: Sequence[str], rows: Iterable[Row]
) -> Iterator[str]:
    """A temporary table with `names` typed as in `table`, filled with `rows` by COPY.

    Created without constraints, dropped once used (a transaction may stage twice) and in
    any case at commit or rollback: nothing outlives the transaction or is shared.
    """
    stage = _quoted(session, f"stage_{table.name}")
    _execute(
        session,
        f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS "  # noqa: S608
        f"SELECT {_columns(session, names)} FROM {_quoted(session, table.name)} WITH NO DATA",
    )
    _copy(session, f"COPY {stage} FROM STDIN", rows)
    yield stage
    _execute(session, f"DROP TABLE {stage}")


def _execute(session: Session, statement: str, parameters: Mapping[str, Any] | None = None) -> None:
    with _driver(session, statement) as cursor:
        cursor.execute(statement, parameters)


def _copy(session: Session, statement: str, rows: Iterable[Row]) -> None:
    with _driver(session, statement) as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


@contextmanager
def _driver(session: Session, statement: str) -> Iterator[Any]:
    """A cursor on the session's own connection (so the writes join its transaction; COPY
    is a driver feature SQLAlchemy does not wrap), with the driver's errors raised as
    SQLAlchemy's, as for any other statement (`IntegrityError`, …)."""
    dialect = session.get_bind().dialect
    dbapi_error = dialect.loaded_dbapi.Error
    connection: Any = session.connection().connection.driver_connection
    try:
        with connection.cursor() as cursor:
            yield cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi_error, dialect=dialect) from exc


def _quoter(session: Session) -> Any:
    return session.get_bind().dialect.identifier_preparer.quote


def _quoted(session: Session, name: str) -> str:
    return str(_quoter(session)(name))


def _columns(session: Session, names: Sequence[str]) -> str:
    return ", ".join(_quoted(session, n) for n in names)
