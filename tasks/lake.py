"""The lake on disk: Parquet parts per table, written atomically, and the writer's lock.

Layout under LAKE/:
    runs/<run_id>-<stage>.parquet      one row per run stage (started, then finished or aborted)
    files/<run_id>.parquet             every discovered file of a run
    embeddings/<run_id>-<seq>.parquet  embeddings, a part every few batches
    metadata/<run_id>.parquet          the run's sidecar metadata, as given
    catalog.duckdb                     views and macros over the parts (tasks.catalog)

A part exists under its final name only once it is complete: it is written to a temporary name in
the same folder, fsynced, then renamed into place (and the folder fsynced). Temporary files left
by a killed run are removed by the next run, which holds the lake's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

__all__ = [
    "EMBEDDINGS_SCHEMA",
    "FILES_SCHEMA",
    "METADATA_KEYS_SCHEMA",
    "NEIGHBORS_SCHEMA",
    "AGREEMENT_SCHEMA",
    "RUNS_SCHEMA",
    "TABLES",
    "PartWriter",
    "embedded_image_ids",
    "embeddings_table",
    "ensure_lake",
    "lake_lock",
    "new_run_id",
    "read_table",
    "rows_to_table",
    "to_json",
    "vectors_of",
    "remove_stale_temporaries",
    "write_part_atomically",
]

TABLES = ("runs", "files", "embeddings", "metadata", "neighbors", "agreement")
_TMP_MARK = ".tmp-"

_TS = pa.timestamp("us", tz="UTC")

RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("stage", pa.string()),
        ("started_at", _TS),
        ("finished_at", _TS),
        ("status", pa.string()),
        ("source", pa.string()),
        ("params", pa.string()),
        ("n_files", pa.int64()),
        ("n_ok", pa.int64()),
        ("n_error", pa.int64()),
        ("n_unique_images", pa.int64()),
        ("n_embedded", pa.int64()),
        ("n_skipped", pa.int64()),
        ("error_counts", pa.string()),
        ("n_metadata_rows", pa.int64()),
        ("n_metadata_without_file", pa.int64()),
        ("n_files_without_metadata", pa.int64()),
        ("device", pa.string()),
        ("precision", pa.string()),
        ("weights", pa.string()),
        ("weights_random", pa.bool_()),
        ("seconds", pa.float64()),
        ("images_per_second", pa.float64()),
        ("stage_seconds", pa.string()),
        ("versions", pa.string()),
        ("message", pa.string()),
    ]
)

FILES_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("path", pa.string()),
        ("size_bytes", pa.int64()),
        ("mtime", _TS),
        ("image_id", pa.string()),
        ("status", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("n_frames", pa.int32()),
        ("exif_datetime", pa.timestamp("us")),
        ("exif_make", pa.string()),
        ("exif_model", pa.string()),
        ("exif_orientation", pa.int32()),
        ("exif_exposure_time", pa.float64()),
        ("exif_f_number", pa.float64()),
        ("exif_iso", pa.float64()),
        ("exif_focal_length", pa.float64()),
        ("gps_lat", pa.float64()),
        ("gps_lon", pa.float64()),
    ]
)

EMBEDDINGS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("backbone", pa.string()),
        ("weights_id", pa.string()),
        ("precision", pa.string()),
        ("dim", pa.int32()),
        ("embedding", pa.list_(pa.float32())),
        ("norm", pa.float32()),
        ("run_id", pa.string()),
        ("created_at", _TS),
    ]
)

NEIGHBORS_SCHEMA = pa.schema(
    [
        ("backbone", pa.string()),
        ("weights_id", pa.string()),
        ("precision", pa.string()),
        ("image_id", pa.string()),
        ("neighbor_id", pa.string()),
        ("rank", pa.int16()),
        ("similarity", pa.float32()),
        ("method", pa.string()),
    ]
)

AGREEMENT_SCHEMA = pa.schema(
    [
        ("backbone_a", pa.string()),
        ("weights_id_a", pa.string()),
        ("backbone_b", pa.string()),
        ("weights_id_b", pa.string()),
        ("precision", pa.string()),
        ("n_images", pa.int64()),
        ("linear_cka", pa.float64()),
    ]
)

# the metadata table's columns are the sidecar's own; these two are always there for joins
METADATA_KEYS_SCHEMA = pa.schema([("path", pa.string()), ("image_id", pa.string())])

_SCHEMAS = {
    "runs": RUNS_SCHEMA,
    "files": FILES_SCHEMA,
    "embeddings": EMBEDDINGS_SCHEMA,
    "metadata": METADATA_KEYS_SCHEMA,
    "neighbors": NEIGHBORS_SCHEMA,
    "agreement": AGREEMENT_SCHEMA,
}


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def ensure_lake(lake: Path) -> Path:
    """Create the lake's folders; write each table's zero-row schema part once.

    The schema parts keep every view bindable before the first data lands (DuckDB refuses a
    glob that matches nothing) and pin the column types for `union_by_name`.
    """
    lake.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        (lake / table).mkdir(exist_ok=True)
    for table, schema in _SCHEMAS.items():
        target = lake / table / "_schema.parquet"
        if not target.exists():
            write_part_atomically(schema.empty_table(), target)
    return lake


def write_part_atomically(table: pa.Table, target: Path) -> Path:
    """Write `table` to `target`: temp file in the same folder, fsync, rename, fsync folder."""
    tmp = target.with_name(f"{target.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with tmp.open("wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(lake: Path) -> list[Path]:
    """Delete temporaries a killed writer left behind; call only while holding the lock."""
    removed = []
    for path in lake.rglob(f"*{_TMP_MARK}*"):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def lake_lock(lake: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lake's writer lock (an OS file lock: released by the kernel if the run dies).

    A second writer waits for the first; `on_wait` is told once that it is waiting.
    Readers never take this lock.
    """
    lake.mkdir(parents=True, exist_ok=True)
    path = lake / ".lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if on_wait:
                on_wait(f"the lake {lake} is being written by {holder}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_table(lake: Path, table: str, columns: list[str] | None = None) -> pa.Table:
    """All committed parts of one table (temporaries are never matched)."""
    folder = lake / table
    parts = sorted(p for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if not parts:
        schema = _SCHEMAS[table]
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    dataset = ds.dataset([str(p) for p in parts], format="parquet", schema=_SCHEMAS.get(table))
    return dataset.to_table(columns=columns)


def embedded_image_ids(
    lake: Path, weights_ids: dict[str, str], precision: str
) -> dict[str, set[str]]:
    """Per backbone, the image_ids already embedded with its weights_id at this precision."""
    found: dict[str, set[str]] = {backbone: set() for backbone in weights_ids}
    table = read_table(lake, "embeddings", ["image_id", "backbone", "weights_id", "precision"])
    for row in table.to_pylist():
        if row["precision"] == precision and weights_ids.get(row["backbone"]) == row["weights_id"]:
            found[row["backbone"]].add(row["image_id"])
    return found


def embeddings_table(
    *,
    image_ids: list[str],
    backbone: str,
    weights_id: str,
    precision: str,
    vectors: np.ndarray,
    norms: np.ndarray,
    run_id: str,
) -> pa.Table:
    """Embedding rows built column-wise from an (n, dim) float32 array (no per-row Python)."""
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    now = datetime.now(UTC)
    columns = {
        "image_id": pa.array(image_ids, pa.string()),
        "backbone": pa.array([backbone] * n, pa.string()),
        "weights_id": pa.array([weights_id] * n, pa.string()),
        "precision": pa.array([precision] * n, pa.string()),
        "dim": pa.array(np.full(n, dim, dtype=np.int32)),
        "embedding": pa.ListArray.from_arrays(offsets, values),
        "norm": pa.array(np.asarray(norms, dtype=np.float32)),
        "run_id": pa.array([run_id] * n, pa.string()),
        "created_at": pa.array([now] * n, _TS),
    }
    return pa.table(columns, schema=EMBEDDINGS_SCHEMA)


class PartWriter:
    """Writes embedding parts on a background thread, so compression and fsync overlap compute.

    `add` queues rows; every `part_rows` rows become one part, written atomically under
    `folder/<prefix>-<seq>.parquet`. `close` flushes the rest and re-raises a writer error.
    At most two parts wait in the queue, which bounds memory.
    """

    def __init__(self, folder: Path, prefix: str, part_rows: int):
        import queue
        import threading

        self.folder, self.prefix, self.part_rows = folder, prefix, part_rows
        self.seconds = 0.0
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._seq = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._run, name="part-writer", daemon=True)
        self._thread.start()

    def add(self, table: pa.Table) -> None:
        self._raise_if_failed()
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self.part_rows:
            self._submit()

    def _submit(self) -> None:
        if self._pending:
            target = self.folder / f"{self.prefix}-{self._seq:06d}.parquet"
            self._queue.put((pa.concat_tables(self._pending), target))
            self._pending, self._rows, self._seq = [], 0, self._seq + 1

    def _run(self) -> None:
        import time

        while (item := self._queue.get()) is not None:
            if self._error is None:
                started = time.perf_counter()
                try:
                    write_part_atomically(*item)
                except BaseException as exc:  # handed to the producer by _raise_if_failed
                    self._error = exc
                self.seconds += time.perf_counter() - started

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write what is pending and wait for the thread; raises the first write error."""
        self._submit()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()


def vectors_of(table: pa.Table) -> np.ndarray:
    """The `embedding` list column of equal-length rows as an (n, dim) float32 array."""
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, -1)


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table in `schema`'s column order from dict rows (missing keys become nulls)."""
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
