"""Each group's agreement sample, kept in the lake and added to run by run.

Backbone agreement (linear CKA, `neighbors._write_agreement`) is computed on a sample: each
group's `k` smallest image_ids (ids are SHA-256 digests, so that is a uniform sample, and a
stable one: as the group grows an image enters only with an id below the k-th). The sample is
kept at `LAKE/samples/<group>.parquet`: the ids, their vectors as the embedding parts store them,
and (in the file's metadata) the embedding parts it covers. A run reads it and the parts it does
not cover yet (the run's own), and writes it back when that changed it; no other part is opened.
Without one (an older lake, a reindex) it is built from every part, once.

Lake data may be crafted: a sample file is read as data (ids and vectors), its part names are
only compared with the lake's listing, and one that is not what this module writes is rebuilt
from the parts, with a warning.
"""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import graph, lake
from .lake import GroupKey

__all__ = ["FOLDER", "Sample", "group_sample", "remove_samples"]

FOLDER = lake.SAMPLES_FOLDER
_META = b"embedlake.sample"  # {"k": k, "parts": [...]} in the file's schema metadata
_log = logging.getLogger("embedlake")

Sample = pa.Table  # image_id (sorted, distinct), embedding as stored


def group_sample(root: lake.Lake, key: GroupKey, k: int) -> Sample:
    """The group's `k` smallest distinct image_ids with their vectors, sorted by id (the first
    stored row of an id wins); brought up to date with the parts it does not cover, and written
    back when that changed it."""
    name = f"{graph.group_name(*key)}.parquet"
    parts = graph.embedding_part_names(root)
    kept, covered = _read(root, name, k, set(parts))
    new_parts = [part for part in parts if part not in covered]
    if not new_parts:
        return kept
    for part in new_parts:
        where = graph._group_filter(key)
        if kept.num_rows >= k:  # parts are sorted by id: row groups above the k-th are skipped
            where = where & (ds.field("image_id") <= kept["image_id"][k - 1].as_py())
        ((_, dataset),) = graph._embedding_parts(root, [part])
        rows = dataset.to_table(columns=["image_id", "embedding"], filter=where)
        if rows.num_rows:
            kept = _smallest(kept, rows, k)
    meta = {_META: json.dumps({"k": k, "parts": parts}).encode()}
    root.write_part(kept.replace_schema_metadata(meta), FOLDER, name)
    return kept


def remove_samples(root: lake.Lake, keep: set[str] | None = None) -> None:
    """Delete the kept samples (those of the groups in `keep` stay): a reindex rebuilds them."""
    for part in root.part_names(FOLDER):
        if keep is None or part.removesuffix(".parquet") not in keep:
            root.delete_part(FOLDER, part)


def _smallest(kept: pa.Table, rows: pa.Table, k: int) -> pa.Table:
    """The k smallest distinct ids of `kept` then `rows` (an id's first row wins), sorted."""
    rows = rows.select(["image_id", "embedding"])
    rows = rows.set_column(0, "image_id", rows["image_id"].cast(pa.string()))
    if kept.num_rows:
        kind = kept.schema.field("embedding").type
        if rows.schema.field("embedding").type != kind:  # float16 and float32 parts: float32
            kind = pa.list_(pa.float32())
            kept = kept.set_column(1, "embedding", kept["embedding"].cast(kind))
            rows = rows.set_column(1, "embedding", rows["embedding"].cast(kind))
        rows = pa.concat_tables([kept, rows])
    rows = rows.append_column("_at", pa.array(range(rows.num_rows), pa.int64()))
    first = rows.group_by("image_id", use_threads=False).aggregate([("_at", "min")])
    first = first.sort_by("image_id").slice(0, k)
    return rows.take(first["_at_min"]).drop_columns(["_at"]).combine_chunks()


def _read(root: lake.Lake, name: str, k: int, parts: set[str]) -> tuple[Sample, set[str]]:
    """The kept sample and the parts it covers; an empty one covering nothing when there is
    none, or one this module did not write (a warning says so), or one whose parts are gone."""
    empty = pa.table({"image_id": pa.array([], pa.string()), "embedding": pa.array([])})
    if name not in root.part_names(FOLDER):
        return empty, set()
    try:
        table = ds.dataset(
            root._part_path(FOLDER, name), format="parquet", filesystem=root._arrow_filesystem()
        ).to_table()
        meta = json.loads((table.schema.metadata or {})[_META])
        covered = meta["parts"]
        ids = table["image_id"]
        kind = table.schema.field("embedding").type if "embedding" in table.schema.names else None
        if not (
            meta["k"] == k
            and isinstance(covered, list)
            and all(isinstance(p, str) for p in covered)
            and table.schema.names == ["image_id", "embedding"]
            and pa.types.is_string(ids.type)
            and kind in (pa.list_(pa.float16()), pa.list_(pa.float32()))
        ):
            raise ValueError("not the form embedlake writes")
        if len(ids) > k or pc.all(pc.less(ids[:-1], ids[1:])).as_py() not in (True, None):
            raise ValueError("its ids are not distinct and sorted")
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        _log.warning("agreement sample %s: unreadable (%s); rebuilt from the parts", name, exc)
        return empty, set()
    if not set(covered) <= parts:  # a part it covers is gone: its rows may be too
        return empty, set()
    return table.select(["image_id", "embedding"]), set(covered)
