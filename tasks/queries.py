"""Named analysis queries: one SQL file each under sql/analysis/, described by its header.

    -- NAME: what it answers
    -- param NAME: TYPE = DEFAULT  -- what it means
    -- example: embedlake query NAME --param KEY=VALUE

Parameters are bound ($NAME), never formatted into the SQL; values from the command line are
converted to the declared type (INTEGER, DOUBLE, VARCHAR, BOOLEAN); DEFAULT may be NULL.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa

from .catalog import check_read_only, sql_text

__all__ = [
    "NamedQuery",
    "QueryError",
    "QueryTimeout",
    "list_queries",
    "load_query",
    "run_query",
    "time_limit",
]

_PARAM = re.compile(
    r"^--\s*param\s+(?P<name>\w+)\s*:\s*(?P<type>\w+)\s*=\s*(?P<default>.+?)\s*(?:--\s*(?P<help>.*))?$"
)
_TYPES = {"INTEGER": int, "DOUBLE": float, "VARCHAR": str, "BOOLEAN": None}


class QueryError(ValueError):
    """An unknown query or a bad parameter; the message says which."""


class QueryTimeout(RuntimeError):
    """A query interrupted by `time_limit`."""


@contextmanager
def time_limit(con: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[None]:
    """Interrupt what `con` runs inside the block after `seconds` (0: no limit).

    DuckDB checks for an interrupt between vectors, so even an endless recursive CTE stops.
    """
    if seconds <= 0:
        yield
        return
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except duckdb.InterruptException as exc:
        if fired.is_set():
            raise QueryTimeout(f"the query ran longer than {seconds:g} s and was stopped") from exc
        raise
    finally:
        timer.cancel()


@dataclass
class Param:
    name: str
    type: str
    default: Any
    help: str = ""


@dataclass
class NamedQuery:
    name: str
    description: str
    sql: str
    params: list[Param] = field(default_factory=list)
    example: str = ""


def _convert(param_type: str, text: str, name: str) -> Any:
    if text.upper() == "NULL":
        return None
    if param_type == "BOOLEAN":
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise QueryError(f"--param {name}={text}: expected true or false")
    try:
        return _TYPES[param_type](text.strip("'"))
    except (KeyError, ValueError) as exc:
        raise QueryError(f"--param {name}={text}: expected {param_type}") from exc


def load_query(name: str) -> NamedQuery:
    if not re.fullmatch(r"\w+", name) or name not in list_queries():
        raise QueryError(f"unknown query {name!r}; `embedlake queries` lists them")
    text = sql_text("analysis", f"{name}.sql")
    header = [line.strip() for line in text.splitlines() if line.startswith("--")]
    first = header[0].removeprefix("--").strip()
    title, _, description = first.partition(":")
    query = NamedQuery(name=title.strip(), description=description.strip(), sql=text)
    for line in header[1:]:
        if match := _PARAM.match(line):
            kind = match["type"].upper()
            query.params.append(
                Param(
                    match["name"],
                    kind,
                    _convert(kind, match["default"], match["name"]),
                    (match["help"] or "").strip(),
                )
            )
        elif line.removeprefix("--").strip().startswith("example:"):
            query.example = line.split("example:", 1)[1].strip()
    return query


def list_queries() -> list[str]:
    folder = resources.files("embedlake.sql").joinpath("analysis")
    return sorted(e.name.removesuffix(".sql") for e in folder.iterdir() if e.name.endswith(".sql"))


def run_query(
    con: duckdb.DuckDBPyConnection, name: str, given: dict[str, str] | None = None
) -> pa.Table:
    """Run a named query with `given` parameters (strings, converted), the rest defaulted."""
    query = load_query(name)
    declared = {p.name: p for p in query.params}
    unknown = sorted(set(given or {}) - set(declared))
    if unknown:
        raise QueryError(
            f"query {name} has no parameter {', '.join(unknown)} "
            f"(parameters: {', '.join(declared) or 'none'})"
        )
    values = {p.name: p.default for p in query.params}
    for key, text in (given or {}).items():
        values[key] = _convert(declared[key].type, text, key)
    (statement,) = check_read_only(con, query.sql)
    return con.sql(statement, params=values).to_arrow_table()
