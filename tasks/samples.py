"""Backbone agreement's samples and sums, kept in the lake and brought up to date run by run.

Backbone agreement (linear CKA, `neighbors._write_agreement`) is computed on a sample: each
group's `k` smallest image_ids (ids are SHA-256 digests, so that is a uniform sample, and a
stable one: as the group grows an image enters only with an id below the k-th). Kept under
`LAKE/samples/` (derived data: `reindex` rebuilds it):
- `<group>.parquet`: the sample's ids, their vectors as the embedding parts store them, and (in
  the file's metadata) the embedding parts it covers. A run reads it and the parts it does not
  cover yet (the run's own), and writes it back when that changed it; no other part is opened.
- `cka-<group a>-<group b>.parquet`: the pair's CKA sums (n, column sums, X^T X, Y^T Y, X^T Y in
  float64) over the ids both samples hold, and a digest of those ids. A run adds the rows that
  entered the shared ids and subtracts those that left (a few per run), instead of summing
  50,000 rows of 1,024 x 2,048 products again (~25 s here).
Without them (an older lake, a reindex, a kill between the two writes: the digest then differs)
they are built from the parts, once.

Lake data may be crafted: these files are read as data (ids, vectors, numbers), part names are
only compared with the lake's listing, and a file that is not what this module writes is rebuilt,
with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import graph, lake
from .lake import GroupKey

__all__ = [
    "FOLDER",
    "CkaSums",
    "Sample",
    "group_sample",
    "linear_cka",
    "pair_cka",
    "remove_samples",
    "update_sample",
]

FOLDER = lake.SAMPLES_FOLDER
_META = b"embedlake.sample"  # {"k": k, "parts": [...]} in the file's schema metadata
_log = logging.getLogger("embedlake")


@dataclass
class Sample:
    """A group's sample: its ids (distinct, sorted) and their vectors (n, dim) as the parts
    store them (float16, or float32 when a part holds float32)."""

    ids: pa.Array
    vectors: np.ndarray

    @staticmethod
    def empty() -> Sample:
        return Sample(pa.array([], pa.string()), np.empty((0, 0), np.float16))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Sample:
        return Sample(self.ids.take(pa.array(rows, pa.int64())), self.vectors[rows])

    def where(self, mask: pa.Array) -> Sample:
        keep = mask.to_numpy(zero_copy_only=False)
        return self if keep.all() else self.take(np.flatnonzero(keep))


def group_sample(root: lake.Lake, key: GroupKey, k: int) -> Sample:
    """The group's `k` smallest distinct image_ids with their vectors, sorted by id (the first
    stored row of an id wins), brought up to date (`update_sample`)."""
    return update_sample(root, key, k)[1]


def update_sample(root: lake.Lake, key: GroupKey, k: int) -> tuple[Sample, Sample]:
    """The group's kept sample (empty when there is none) and the sample brought up to date with
    the parts it did not cover, written back when that changed it."""
    name = f"{graph.group_name(*key)}.parquet"
    parts = graph.embedding_part_names(root)
    before, covered = _read(root, name, k, set(parts))
    new_parts = [part for part in parts if part not in covered]
    if not new_parts:
        return before, before
    kept = before
    for part in new_parts:
        where = graph._group_filter(key)
        if len(kept) >= k:  # parts are sorted by id: row groups above the k-th are skipped
            where = where & (ds.field("image_id") <= kept.ids[k - 1].as_py())
        ((_, dataset),) = graph._embedding_parts(root, [part])
        rows = dataset.to_table(columns=["image_id", "embedding"], filter=where)
        if rows.num_rows:
            kept = _smallest(kept, _from_part(rows), k)
    _write_sample(root, name, kept, {"k": k, "parts": parts})
    return before, kept


def pair_cka(
    root: lake.Lake,
    keys: tuple[GroupKey, GroupKey],
    before: tuple[Sample, Sample],
    after: tuple[Sample, Sample],
) -> tuple[int, float] | None:
    """(images, linear CKA) over the ids both samples hold (`after`), None below 3 images. The
    pair's kept sums are brought from `before`'s shared ids to `after`'s by the rows that
    entered and left; summed afresh when there are none, or they are for other ids."""
    name = f"cka-{graph.group_name(*keys[0])}-{graph.group_name(*keys[1])}.parquet"
    a0, b0 = _shared(*before)
    a1, b1 = _shared(*after)
    if len(a1) < 3:
        return None
    dims = a1.vectors.shape[1], b1.vectors.shape[1]
    sums = _read_sums(root, name, dims, _digest(a0)) if len(a0) else None
    if sums is None:
        sums = CkaSums(*dims)
        _add_rows(sums, a1, b1)
    elif not a0.ids.equals(a1.ids):
        entered = pc.invert(pc.is_in(a1.ids, value_set=a0.ids))
        left = pc.invert(pc.is_in(a0.ids, value_set=a1.ids))
        _add_rows(sums, a1.where(entered), b1.where(entered))
        _add_rows(sums, a0.where(left), b0.where(left), sign=-1)
    else:
        return len(a1), sums.value()
    _write_sums(root, name, sums, _digest(a1))
    return len(a1), sums.value()


def remove_samples(root: lake.Lake) -> None:
    """Delete the kept samples and sums: a reindex rebuilds them from the parts."""
    for part in root.part_names(FOLDER):
        root.delete_part(FOLDER, part)


class CkaSums:
    """Running sums from which linear CKA of the rows added so far follows (float64); rows are
    added (and taken away) a chunk at a time."""

    def __init__(self, dim_x: int, dim_y: int):
        self.n = 0
        self.sx, self.sy = np.zeros(dim_x), np.zeros(dim_y)
        self.xy = np.zeros((dim_x, dim_y))
        self.xx, self.yy = np.zeros((dim_x, dim_x)), np.zeros((dim_y, dim_y))

    def add(self, x: np.ndarray, y: np.ndarray, sign: int = 1) -> None:
        x, y = x.astype(np.float64), y.astype(np.float64)
        self.n += sign * len(x)
        self.sx += sign * x.sum(0)
        self.sy += sign * y.sum(0)
        self.xy += sign * (x.T @ y)
        self.xx += sign * (x.T @ x)
        self.yy += sign * (y.T @ y)

    def value(self) -> float:
        mx, my = self.sx / self.n, self.sy / self.n
        # centred products: sum (x - mx)^T (y - my) = X^T Y - n mx my^T
        xy = self.xy - self.n * np.outer(mx, my)
        xx = self.xx - self.n * np.outer(mx, mx)
        yy = self.yy - self.n * np.outer(my, my)
        return float(np.linalg.norm(xy) ** 2 / (np.linalg.norm(xx) * np.linalg.norm(yy)))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same rows."""
    sums = CkaSums(x.shape[1], y.shape[1])
    sums.add(x, y)
    return sums.value()


def _shared(a: Sample, b: Sample) -> tuple[Sample, Sample]:
    """The rows of the ids both samples hold, in id order (so row i is one image in both)."""
    return a.where(pc.is_in(a.ids, value_set=b.ids)), b.where(pc.is_in(b.ids, value_set=a.ids))


def _add_rows(sums: CkaSums, a: Sample, b: Sample, sign: int = 1, chunk: int = 8192) -> None:
    """Add (sign -1: take away) the rows' products, a chunk at a time (float32 for the chunk)."""
    for c0 in range(0, len(a), chunk):
        x = a.vectors[c0 : c0 + chunk].astype(np.float32)
        y = b.vectors[c0 : c0 + chunk].astype(np.float32)
        sums.add(x, y, sign)


def _digest(sample: Sample) -> str:
    """Which ids a pair's sums cover: a SHA-256 over the sorted ids."""
    digest = hashlib.sha256()
    for image_id in sample.ids.to_pylist():
        digest.update(image_id.encode() + b"\n")
    return digest.hexdigest()


_SUMS = ("sx", "sy", "xx", "yy", "xy")


def _write_sums(root: lake.Lake, name: str, sums: CkaSums, digest: str) -> None:
    # each array one binary value of its float64 bytes (as lists, 7 M doubles took 2.7 s)
    columns = {"n": pa.array([sums.n], pa.int64())}
    columns |= {f: pa.array([getattr(sums, f).astype("<f8").tobytes()]) for f in _SUMS}
    table = pa.table(columns).replace_schema_metadata({_META: json.dumps({"ids": digest})})
    root.write_part(table, FOLDER, name)


def _read_sums(root: lake.Lake, name: str, dims: tuple[int, int], digest: str) -> CkaSums | None:
    """The pair's kept sums when they cover the ids of `digest`, else None (a file not in this
    module's form also says so, in a warning)."""
    if name not in root.part_names(FOLDER):
        return None
    sums = CkaSums(*dims)
    try:
        table = _read_table(root, name)
        meta = json.loads((table.schema.metadata or {})[_META])
        if meta["ids"] != digest:
            return None  # for other ids: a kill between the writes, or a sample rebuilt
        if table.num_rows != 1 or table.schema.names != ["n", *_SUMS]:
            raise ValueError("not the form embedlake writes")
        sums.n = table["n"][0].as_py()
        for field in _SUMS:
            want = getattr(sums, field)
            value = table[field][0]
            if not isinstance(value, pa.BinaryScalar) or len(value.as_buffer()) % 8:
                raise ValueError(f"{field} is not float64 bytes")
            got = np.frombuffer(value.as_buffer(), "<f8").astype(np.float64)
            if got.shape != (want.size,) or not np.isfinite(got).all():
                raise ValueError(f"{field} is not {want.shape} finite numbers")
            setattr(sums, field, got.reshape(want.shape))
        if not isinstance(sums.n, int) or sums.n < 1:
            raise ValueError("its row count is not a positive integer")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException) as exc:
        _log.warning("agreement sums %s: unreadable (%s); summed again", name, exc)
        return None
    return sums


def _read_table(root: lake.Lake, name: str) -> pa.Table:
    return ds.dataset(
        root._part_path(FOLDER, name), format="parquet", filesystem=root._arrow_filesystem()
    ).to_table()


def _smallest(kept: Sample, rows: Sample, k: int) -> Sample:
    """The k smallest distinct ids of `kept` then `rows` (an id's first row wins), sorted."""
    if not len(kept):
        both = rows
    else:
        kind = np.promote_types(kept.vectors.dtype, rows.vectors.dtype)  # float16 + float32
        both = Sample(
            pa.concat_arrays([kept.ids, rows.ids]),
            np.concatenate([kept.vectors.astype(kind), rows.vectors.astype(kind)]),
        )
    _, first = np.unique(both.ids.to_numpy(zero_copy_only=False), return_index=True)
    return both.take(first[:k])


def _from_part(rows: pa.Table) -> Sample:
    """A part's rows (image_id, embedding lists of one length) as a Sample (unsorted)."""
    column = rows["embedding"].combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    if values.dtype not in (np.float16, np.float32) or len(values) % rows.num_rows:
        raise ValueError("an embedding part's vectors are not float lists of one length")
    ids = rows["image_id"].combine_chunks().cast(pa.string())
    return Sample(ids, values.reshape(rows.num_rows, -1))


def _write_sample(root: lake.Lake, name: str, sample: Sample, meta: dict) -> None:
    """The sample as (image_id, vector): each vector one fixed-width binary value of its bytes
    (lists of 100 M float16 values took 8.6 s to write and 3 s to read; this, 0.1 s)."""
    vectors = np.ascontiguousarray(sample.vectors)
    width = vectors.shape[1] * vectors.itemsize if len(vectors) else 0
    blob = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(vectors), [None, pa.py_buffer(vectors.tobytes())]
    )
    meta = {**meta, "dtype": vectors.dtype.name}
    table = pa.table({"image_id": sample.ids, "vector": blob})
    root.write_part(table.replace_schema_metadata({_META: json.dumps(meta)}), FOLDER, name)


def _read(root: lake.Lake, name: str, k: int, parts: set[str]) -> tuple[Sample, set[str]]:
    """The kept sample and the parts it covers; an empty one covering nothing when there is
    none, or one this module did not write (a warning says so), or one whose parts are gone."""
    if name not in root.part_names(FOLDER):
        return Sample.empty(), set()
    try:
        table = _read_table(root, name)
        meta = json.loads((table.schema.metadata or {})[_META])
        covered = meta["parts"]
        kind = np.dtype({"float16": np.float16, "float32": np.float32}[meta["dtype"]])
        if not (
            meta["k"] == k
            and isinstance(covered, list)
            and all(isinstance(p, str) for p in covered)
            and table.schema.names == ["image_id", "vector"]
            and pa.types.is_string(table.schema.field("image_id").type)
            and pa.types.is_fixed_size_binary(table.schema.field("vector").type)
        ):
            raise ValueError("not the form embedlake writes")
        ids = table["image_id"].combine_chunks()
        column = table["vector"].combine_chunks()
        width = column.type.byte_width
        if len(ids) > k or not width or width % kind.itemsize or column.null_count:
            raise ValueError("its rows are not k vectors of one width")
        if pc.all(pc.less(ids[:-1], ids[1:])).as_py() not in (True, None):
            raise ValueError("its ids are not distinct and sorted")
        data = column.buffers()[1]
        start = column.offset * width
        vectors = np.frombuffer(data, kind, len(ids) * width // kind.itemsize, start)
        sample = Sample(ids, vectors.reshape(len(ids), -1).copy())
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        _log.warning("agreement sample %s: unreadable (%s); rebuilt from the parts", name, exc)
        return Sample.empty(), set()
    if not set(covered) <= parts:  # a part it covers is gone: its rows may be too
        return Sample.empty(), set()
    return sample, set(covered)
