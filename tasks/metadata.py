"""Sidecar metadata: a CSV, Parquet or JSON-lines file with one row per image.

Rows are keyed by `path` (relative to SOURCE, the default) or by `image_id`. The table keeps the
sidecar's columns as given and gains `path` and `image_id` (whichever it lacked, filled from the
run's files), so the `metadata` view joins to `files` either way.

A run reads and validates the sidecar (`validate_sidecar`) before it looks at a single image, so a
bad sidecar costs seconds, not a night of embedding. Refused, with a one-line message: a file that
cannot be read (CSV and JSON must be UTF-8), a missing key column, an empty or missing key, a key
that escapes SOURCE, a key given twice (which row would apply is ambiguous), a column whose values
cannot be stored in Parquet. Accepted and counted in the run's summary: keys that match no file
(orphans, `n_metadata_without_file`) and files without a row (`n_files_without_metadata`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

__all__ = ["MetadataError", "SidecarResult", "join_sidecar", "read_sidecar", "validate_sidecar"]


class MetadataError(ValueError):
    """A sidecar that cannot be used as given; the message says why."""


@dataclass
class SidecarResult:
    frame: pd.DataFrame
    n_rows: int
    n_without_file: int
    n_files_without_row: int


def read_sidecar(path: Path) -> pd.DataFrame:
    """The sidecar as a DataFrame, by suffix: .csv/.tsv, .parquet, .jsonl/.ndjson/.json."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise MetadataError(f"--metadata {path}: no such file")
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pd.read_json(path, lines=True)
    except UnicodeDecodeError as exc:
        raise MetadataError(
            f"--metadata {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "save it as UTF-8"
        ) from exc
    except Exception as exc:  # pandas raises parser-specific errors; all mean "cannot read it"
        raise MetadataError(f"--metadata {path}: cannot read it: {exc}") from exc
    raise MetadataError(
        f"--metadata {path}: unknown format {suffix!r} (use .csv, .parquet or .jsonl)"
    )


def _normalise_key(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        raise MetadataError("metadata key is empty in some row (every row needs its file's path)")
    text = str(value).replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or ".." in parts:
        raise MetadataError(f"metadata key {value!r} escapes SOURCE (keys are relative paths)")
    return PurePosixPath(*[p for p in parts if p != "."]).as_posix()


def validate_sidecar(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """The sidecar with its keys normalised, or a MetadataError naming the first problem."""
    import pyarrow as pa

    if key not in ("path", "image_id"):
        raise MetadataError(f"--key {key}: the key must be 'path' or 'image_id'")
    if key not in frame.columns:
        raise MetadataError(
            f"--key {key}: the sidecar has no such column "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    if key == "path":
        frame["path"] = [_normalise_key(v) for v in frame["path"]]
    else:
        if frame["image_id"].isna().any():
            raise MetadataError("metadata key image_id is empty in some row")
        frame["image_id"] = frame["image_id"].astype(str).str.lower()
    repeated = frame[key][frame[key].duplicated(keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        raise MetadataError(
            f"metadata key {key}={first!r} appears {int((repeated == first).sum())} times "
            f"({repeated.nunique()} keys repeated): keep one row per file"
        )
    for column in frame.columns:
        try:
            pa.array(frame[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise MetadataError(
                f"metadata column {column!r} mixes types Parquet cannot store together "
                f"({str(exc).splitlines()[0]}); make its values one type"
            ) from exc
    return frame


def join_sidecar(frame: pd.DataFrame, key: str, files: list[dict[str, Any]]) -> SidecarResult:
    """Attach `path` and `image_id` to each sidecar row and count what does not match."""
    frame = validate_sidecar(frame, key)
    by_path = {f["path"]: f.get("image_id") for f in files}
    if key == "path":
        frame["image_id"] = [by_path.get(p) for p in frame["path"]]
        matched = frame["path"].isin(set(by_path))
        keys_with_row = set(frame["path"])
        n_files_without_row = sum(1 for p in by_path if p not in keys_with_row)
    else:
        first_path: dict[str, str] = {}
        for path, image_id in sorted(by_path.items()):
            if image_id is not None:
                first_path.setdefault(image_id, path)
        if "path" not in frame.columns:
            frame["path"] = [first_path.get(i) for i in frame["image_id"]]
        matched = frame["image_id"].isin(set(first_path))
        ids_with_row = set(frame["image_id"])
        n_files_without_row = sum(1 for i in by_path.values() if i not in ids_with_row)
    return SidecarResult(
        frame=frame,
        n_rows=len(frame),
        n_without_file=int((~matched).sum()),
        n_files_without_row=n_files_without_row,
    )
