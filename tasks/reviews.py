"""Reviews: people's decisions about images, kept in the lake, and the curated collection.

A review says of one image: keep it, exclude it, relabel it (a value for one label column) or
tag it (a value). `add_reviews` appends reviews to the lake's `reviews` table the way every table
is written: one part per call, renamed into place whole, under the lake's writer lock, on a local
or a URL lake alike. Each row carries who made it, when (UTC) and the run it was made on (the
lake's latest finished run). A review of an image the current collection does not hold is refused.

Nothing is rewritten: a change of mind is a newer row, and the latest decision per image and kind
is in force (sql/catalog/70_reviews.sql, `current_reviews`: keep and exclude are one kind, a
relabel's kind is its label column, a tag's its value).

`export_collection` writes the curated collection, the current images minus excluded ones with
their reviewed labels beside the given ones (sql/analysis/curated_collection.sql), to one file
outside the lake; `reviewed_labels` is what a run's probes take over the given labels.
"""

from __future__ import annotations

import getpass
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .catalog import build_catalog, check_read_only, connect_read_only, sql_text
from .lake import SCHEMA_PART, Lake, replace_atomically, rows_to_table
from .schemas import REVIEWS_SCHEMA

__all__ = [
    "DECISIONS",
    "DEFAULT_LABEL_COLUMN",
    "EXPORT_FORMATS",
    "ReviewError",
    "add_reviews",
    "check_review",
    "export_collection",
    "reviewed_labels",
]

DECISIONS = ("keep", "exclude", "relabel", "tag")
_WITH_VALUE = ("relabel", "tag")
DEFAULT_LABEL_COLUMN = "label"  # the column a relabel corrects when none is named
EXPORT_FORMATS = ("parquet", "csv")
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")  # hex SHA-256 of the file's bytes
_BATCH_ROWS = 8192


class ReviewError(ValueError):
    """A review or an export the lake refuses; its message is one line."""


def check_review(row: Mapping[str, Any]) -> dict[str, Any]:
    """One review as it will be stored (without made_at and run_id), or a one-line ReviewError.

    `row`: image_id, decision, and value (a relabel's label or a tag; none for keep and
    exclude), optionally label_column (a relabel's; default `label`), note and who (default:
    the OS user)."""
    image_id = str(row.get("image_id") or "").strip().lower()
    if not _IMAGE_ID.fullmatch(image_id):
        raise ReviewError(f"{row.get('image_id')!r} is not an image_id (64 hex digits)")
    decision = row.get("decision")
    if decision not in DECISIONS:
        raise ReviewError(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}")
    value, column = row.get("value"), row.get("label_column")
    if decision in _WITH_VALUE and not (isinstance(value, str) and value.strip()):
        raise ReviewError(f"a {decision} needs a value")
    if decision not in _WITH_VALUE and value is not None:
        raise ReviewError(f"a {decision} takes no value (given {value!r})")
    if decision != "relabel" and column is not None:
        raise ReviewError(f"a {decision} names no label column (only a relabel does)")
    if decision == "relabel":
        column = column or DEFAULT_LABEL_COLUMN
    return {
        "image_id": image_id,
        "decision": decision,
        "value": value,
        "label_column": column,
        "note": row.get("note"),
        "who": row.get("who") or getpass.getuser(),
    }


def add_reviews(
    root: str | Path | Lake,
    rows: Iterable[Mapping[str, Any]],
    on_wait: Callable[[str], None] | None = None,
) -> int:
    """Append `rows` (see `check_review`) to the lake's reviews as one part; the count written.

    Every row is checked before anything is written: one bad row, or one image_id the current
    collection lacks, refuses them all. Waits for a run that holds the lake (`on_wait` is told).
    """
    checked = [check_review(row) for row in rows]
    if not checked:
        return 0
    root = Lake.at(root)
    if not root.exists():
        raise ReviewError(f"no lake at {root}: run `embedlake run SOURCE --lake {root}` first")
    with root.lock(on_wait):
        if "reviews" in root.missing_tables():  # a lake from before reviews: give it the table
            build_catalog(root)
        run_id = _check_held(root, sorted({row["image_id"] for row in checked}))
        made_at = datetime.now(UTC)
        table = rows_to_table(
            [{**row, "made_at": made_at, "run_id": run_id} for row in checked], REVIEWS_SCHEMA
        )
        # named by time: parts sort in the order they were made (current_reviews' tie-break)
        root.write_part(
            table, "reviews", f"{made_at:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}.parquet"
        )
    return len(checked)


def _check_held(root: Lake, image_ids: list[str]) -> str:
    """The latest finished run's id, once every image_id is found in the current collection."""
    with connect_read_only(root) as con:
        found = con.execute(sql_text("search", "known_images.sql"), {"image_ids": image_ids})
        held = {image_id for (image_id,) in found.fetchall()}
        latest = con.execute(sql_text("search", "latest_finished_run.sql")).fetchone()
    if unknown := [image_id for image_id in image_ids if image_id not in held]:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ReviewError(f"the lake {root} holds no image {unknown[0]}{more}; nothing recorded")
    if latest is None:
        raise ReviewError(f"the lake {root} has no finished run to review")
    return latest[0]


def reviewed_labels(
    root: str | Path | Lake, column: str, image_ids: Iterable[str]
) -> dict[str, str]:
    """image_id -> the label its latest relabel of `column` gave it, for `image_ids` only."""
    root = Lake.at(root)
    if not [name for name in root.part_names("reviews") if name != SCHEMA_PART]:
        return {}  # no review yet (and a first run has no catalog to ask)
    with connect_read_only(root) as con:
        found = con.execute(sql_text("search", "reviewed_labels.sql"), {"column": column})
        rows = found.fetchall()
    wanted = set(image_ids)
    return {image_id: label for image_id, label in rows if image_id in wanted}


def export_collection(
    root: str | Path | Lake,
    output: str | Path,
    fmt: str = "parquet",
    label_column: str = DEFAULT_LABEL_COLUMN,
) -> int:
    """Write the curated collection to `output` (Parquet or CSV); the number of rows.

    Read through the catalog's read-only connection, a batch at a time; the file is the only
    write, made whole or not at all (a temporary name beside it, then a rename), never inside
    the lake. CSV cells a spreadsheet would run as formulas get the report's guard."""
    from .queries import load_query

    if fmt not in EXPORT_FORMATS:
        raise ReviewError(f"--format {fmt}: expected one of {', '.join(EXPORT_FORMATS)}")
    root = Lake.at(root)
    target = _export_target(root, Path(output))
    written = 0

    def write(tmp: Path) -> None:
        nonlocal written
        written = _WRITERS[fmt](reader, tmp)

    with connect_read_only(root) as con:
        (statement,) = check_read_only(con, load_query("curated_collection").sql)
        reader = con.sql(statement, params={"label_column": label_column}).to_arrow_reader(
            _BATCH_ROWS
        )
        replace_atomically(target, write)
    return written


def _export_target(root: Lake, output: Path) -> Path:
    """`output` with its folder resolved; refused inside the lake (or its local cache)."""
    output = output.expanduser()
    if not output.name or output.is_dir():
        raise ReviewError(f"--output {output}: give a file name, not a folder")
    folder = output.parent.resolve()
    if not folder.is_dir():
        raise ReviewError(f"--output {output}: no such folder {folder}")
    target = folder / output.name
    for inside in {root.path, root.local_dir} - {None}:
        if target.is_relative_to(Path(inside).resolve()):
            raise ReviewError(
                f"--output {output} is inside the lake {root}: export writes outside it"
            )
    return target


def _write_parquet(reader: pa.RecordBatchReader, path: Path) -> int:
    import pyarrow.parquet as pq

    rows = 0
    with pq.ParquetWriter(path, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _write_csv(reader: pa.RecordBatchReader, path: Path) -> int:
    import pyarrow.csv as pacsv

    from .report import csv_safe  # lake text is untrusted: the report's formula guard

    rows = 0
    with pacsv.CSVWriter(path, csv_safe(reader.schema.empty_table()).schema) as writer:
        for batch in reader:
            writer.write_table(csv_safe(pa.Table.from_batches([batch])))
            rows += batch.num_rows
    return rows


_WRITERS = {"parquet": _write_parquet, "csv": _write_csv}
