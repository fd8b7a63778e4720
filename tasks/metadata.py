"""Sidecar metadata: a CSV, Parquet or JSON-lines file with one row per image.

Rows are keyed by `path` (relative to SOURCE, the default) or by `image_id`. The table keeps the
sidecar's columns as given and gains `path` and `image_id` (whichever it lacked, filled from the
run's files), so the `metadata` view joins to `files` either way. Rows whose key matches no file
and files with no row are counted for the run summary; keys that escape SOURCE are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

__all__ = ["MetadataError", "SidecarResult", "join_sidecar", "read_sidecar"]


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
    except Exception as exc:  # pandas raises parser-specific errors; all mean "cannot read it"
        raise MetadataError(f"--metadata {path}: cannot read it: {exc}") from exc
    raise MetadataError(
        f"--metadata {path}: unknown format {suffix!r} (use .csv, .parquet or .jsonl)"
    )


def _normalise_key(value: Any) -> str:
    text = str(value).replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or ".." in parts:
        raise MetadataError(f"metadata key {value!r} escapes SOURCE (keys are relative paths)")
    return PurePosixPath(*[p for p in parts if p != "."]).as_posix()


def join_sidecar(frame: pd.DataFrame, key: str, files: list[dict[str, Any]]) -> SidecarResult:
    """Attach `path` and `image_id` to each sidecar row and count what does not match."""
    if key not in frame.columns:
        raise MetadataError(
            f"--key {key}: the sidecar has no such column "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    if key not in ("path", "image_id"):
        raise MetadataError(f"--key {key}: the key must be 'path' or 'image_id'")
    frame = frame.copy()
    by_path = {f["path"]: f.get("image_id") for f in files}
    if key == "path":
        frame["path"] = [_normalise_key(v) for v in frame["path"]]
        frame["image_id"] = [by_path.get(p) for p in frame["path"]]
        matched = frame["path"].isin(set(by_path))
        keys_with_row = set(frame["path"])
        n_files_without_row = sum(1 for p in by_path if p not in keys_with_row)
    else:
        frame["image_id"] = frame["image_id"].astype(str).str.lower()
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
