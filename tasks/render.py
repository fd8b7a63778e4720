"""Query results out: a terminal table (long vectors shortened), CSV, JSON lines or Parquet."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

__all__ = ["write_result"]

_SHOWN_ITEMS = 4


def _shorten(value: object) -> object:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) > _SHOWN_ITEMS:
        head = ", ".join(
            f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v)
            for v in value[:_SHOWN_ITEMS]
        )
        return f"[{head}, ... ({len(value)} items)]"
    return value


def write_result(table: pa.Table, fmt: str, output: str | None = None) -> None:
    """Write `table` as `fmt` to `output` (a path) or to stdout."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, Path(output))
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, output or sys.stdout.buffer)
        return
    # integer_object_nulls: a nullable integer column prints as 512, not 512.0
    frame = table.to_pandas(integer_object_nulls=True)
    if fmt == "table":
        for column in frame.columns:
            if frame[column].dtype == object:
                frame[column] = frame[column].map(_shorten)
        import pandas as pd

        with pd.option_context(
            "display.max_rows",
            200,
            "display.max_columns",
            50,
            "display.width",
            200,
            "display.max_colwidth",
            80,
        ):
            text = frame.to_string(index=False) if len(frame.columns) else "(no columns)"
        text += f"\n({len(frame)} row{'s' if len(frame) != 1 else ''})\n"
    elif fmt == "json":
        text = frame.to_json(orient="records", lines=True, date_format="iso")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)
