"""Query results out: a terminal table (long vectors shortened), CSV, JSON lines or Parquet.

Values go straight from Arrow to text, never through pandas: a nullable integer stays an integer
and a null prints as NULL (as DuckDB's own renderer shows them), DuckDB's HUGEINT and DECIMAL
results are JSON numbers, list, struct and map columns are JSON text in a CSV cell, and binary
columns (`files.path_bytes`) are hex everywhere but Parquet.

Text comes from the lake (paths, EXIF strings, sidecar values) and is shown as text: the terminal
table escapes control characters (ESC as `\\x1b`, a newline as `\\n`) and bidirectional overrides in
cells and column names, so data cannot move the cursor, recolour or retitle the terminal. JSON
escapes C0 controls itself. CSV (and Parquet) keep every value exact, control characters
included: they are data files for programs; `cat` one to a terminal at your own risk.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

__all__ = ["write_result"]

_SHOWN_ITEMS = 4  # of a list in a table cell
_SHOWN_ROWS = 200  # of a terminal table; the other formats write every row
_CELL_WIDTH = 80
# C0 and C1 controls, DEL, and the bidirectional marks and overrides that reorder what follows
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def write_result(
    data: pa.Table | pa.RecordBatchReader, fmt: str, output: str | None = None
) -> None:
    """Write `data` as `fmt` to `output` (a path) or to stdout.

    A RecordBatchReader is streamed a batch at a time (csv, json, parquet: memory follows a
    batch, not the result; table: the first rows are shown and the rest only counted).
    """
    if isinstance(data, pa.Table):
        data = pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(Path(output), data.schema) as writer:
            for batch in data:
                writer.write_batch(batch)
        return
    if fmt not in ("csv", "json", "table"):
        raise ValueError(f"unknown format {fmt!r}")
    if fmt == "csv":
        if output:
            with open(output, "wb") as sink:
                _write_csv(data, sink)
        else:
            _write_csv(data, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return
    write = _write_json if fmt == "json" else _write_table
    if output:
        with open(output, "w", encoding="utf-8") as sink:
            write(data, sink)
    else:
        write(data, sys.stdout)


def _plain(value: Any) -> Any:
    """A value from Arrow's to_pylist as JSON has it: numbers stay numbers, NaN becomes null."""
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, pa.MonthDayNano):  # an INTERVAL
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _rows(data: pa.RecordBatchReader) -> Iterator[dict[str, Any]]:
    for batch in data:  # a batch at a time: memory stays bounded
        yield from batch.to_pylist(maps_as_pydicts="lossy")


def _write_json(data: pa.RecordBatchReader, sink: TextIO) -> None:
    for row in _rows(data):
        sink.write(json.dumps(_plain(row), ensure_ascii=False, allow_nan=False) + "\n")


def _needs_json_text(kind: pa.DataType) -> bool:
    # Arrow's CSV writer takes scalars only: lists, structs, maps and intervals go as JSON text;
    # it also refuses bytes that are not UTF-8, so binary columns go as hex (as in JSON)
    return (
        pa.types.is_nested(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_interval(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


# a cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA = "^[=+\\-@\t\r]"


def formula_safe_text(text: str | None) -> str | None:
    """`text` with a leading apostrophe when a spreadsheet would run it as a formula."""
    return "'" + text if text is not None and text.startswith(FORMULA_START) else text


def formula_safe(column: pa.Array) -> pa.Array:
    """A string column with `formula_safe_text` applied to every cell (vectorised)."""
    import pyarrow.compute as pc

    guarded = pc.binary_join_element_wise(pa.scalar("'", column.type), column, "")
    return pc.if_else(pc.match_substring_regex(column, _FORMULA), guarded, column)


def _write_csv(data: pa.RecordBatchReader, sink) -> None:
    """CSV, with nested values as JSON text; text from the lake is untrusted, so a header or cell
    a spreadsheet would run as a formula gets a leading apostrophe (`--format json` or `parquet`
    keep text exactly)."""
    import pyarrow.csv as pacsv

    nested = {i for i, f in enumerate(data.schema) if _needs_json_text(f.type)}
    fields = [f.with_type(pa.string()) if i in nested else f for i, f in enumerate(data.schema)]
    schema = pa.schema([f.with_name(formula_safe_text(f.name)) for f in fields])
    text = {
        i
        for i, f in enumerate(schema)
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    }
    with pacsv.CSVWriter(sink, schema) as writer:
        for batch in data:
            columns = [
                _as_json_text(column) if i in nested else column
                for i, column in enumerate(batch.columns)
            ]
            columns = [formula_safe(c) if i in text else c for i, c in enumerate(columns)]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))


def _as_json_text(column: pa.Array) -> pa.Array:
    return pa.array(
        [
            None if v is None else v.hex() if isinstance(v, bytes) else json.dumps(_plain(v))
            for v in column.to_pylist(maps_as_pydicts="lossy")
        ],
        pa.string(),
    )


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, pa.MonthDayNano):
        value = _plain(value)
    if isinstance(value, (list, tuple)):
        items = [_cell(v) for v in value[:_SHOWN_ITEMS]]
        if len(value) > _SHOWN_ITEMS:
            items.append(f"... ({len(value)} items)")
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bytes):
        value = value.hex()
    return str(value)


def _printable(text: str) -> str:
    """`text` with control characters escaped: one row, one line, nothing the terminal obeys."""
    return _UNPRINTABLE.sub(
        lambda m: (
            _NAMED_ESCAPES.get(m[0])
            or (f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}")
        ),
        text,
    )


def _clip(text: str) -> str:
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 3] + "..."


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _write_table(data: pa.RecordBatchReader, sink: TextIO) -> None:
    head, n = [], 0
    for batch in data:  # the first rows are kept, the others counted
        if n < _SHOWN_ROWS:
            head.append(batch.slice(0, _SHOWN_ROWS - n))
        n += batch.num_rows
    table = pa.Table.from_batches(head, schema=data.schema)
    if not table.num_columns:
        sink.write(f"(no columns)\n({n} row{'s' if n != 1 else ''})\n")
        return
    shown = table.slice(0, _SHOWN_ROWS)
    columns = [
        [_clip(_printable(_cell(v))) for v in column.to_pylist(maps_as_pydicts="lossy")]
        for column in shown.columns
    ]
    names = [_printable(name) for name in table.column_names]
    lines = []
    widths = [
        max([len(name), *(len(c) for c in cells)])
        for name, cells in zip(names, columns, strict=True)
    ]
    right = [_is_number(f.type) for f in table.schema]
    for row in [names, *zip(*columns, strict=True)]:
        cells = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        )
        lines.append("  ".join(cells).rstrip())
    footer = f"({n} row{'s' if n != 1 else ''}"
    if n > _SHOWN_ROWS:
        footer += f", the first {_SHOWN_ROWS} shown; --format csv, json or parquet writes all"
    sink.write("\n".join(lines) + f"\n{footer})\n")
