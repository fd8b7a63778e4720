"""nearest: a stored image's k most similar images, under the same backbone, weights and precision.

A group with an ANN index (`ann_index`, made once the group outgrows `ann_threshold`) is searched
through it, one mapped segment at a time, plus an exact scan of the embedding parts the index does
not cover yet (a run whose graph update did not happen: normally none). A smaller group is
scanned exactly, a block at a time. The query's own vector comes from a point lookup: embedding
parts are sorted by image_id in row groups of `lake.ROW_GROUP_ROWS` rows, so the lookup reads
one row group's ids per part, and one vector. Memory follows one index segment or one block,
whatever the collection's size. The catalog's `nearest` macro answers the same question in SQL
by a scan of every vector (exact; fine for small lakes).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from . import graph, lake

__all__ = ["RESULT_SCHEMA", "NearestError", "nearest"]

RESULT_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("backbone", pa.string()),
        ("rank", pa.int32()),
        ("image_id", pa.string()),
        ("similarity", pa.float32()),
        ("method", pa.string()),
    ]
)


class NearestError(ValueError):
    """A query that cannot be answered; the message (one line) says why."""


def _query_vector(
    root: lake.Lake, image_id: str, backbone: str
) -> tuple[graph.GroupKey, np.ndarray]:
    """The image's stored vector under `backbone` (its latest, when several groups hold it).

    DuckDB reads the parts' footers, skips the row groups whose image_id min/max exclude the id
    (a part sorted by image_id keeps one), and reads vectors only where the id is found.
    """
    import duckdb

    con = duckdb.connect()
    root.register(con)
    row = con.execute(
        "SELECT weights_id, precision, embedding "
        "FROM read_parquet($parts, union_by_name = true) "
        "WHERE image_id = $id AND backbone = $backbone ORDER BY created_at DESC LIMIT 1",
        {"parts": root.location("embeddings", "*.parquet"), "id": image_id, "backbone": backbone},
    ).fetchone()
    if row is None:
        raise NearestError(f"the lake holds no {backbone} embedding of image {image_id}")
    return (backbone, row[0], row[1]), np.asarray(row[2], np.float32)


def nearest(lake_ref, image_id: str, backbone: str, k: int = 10) -> pa.Table:
    """The k images most like `image_id` under `backbone` (RESULT_SCHEMA), nearest first."""
    if k < 1:
        raise NearestError("k must be at least 1")
    root = lake.Lake.at(lake_ref)
    key, query = _query_vector(root, image_id, backbone)
    index = graph.open_index(root, key, convert=False)  # a reader converts nothing
    best_s = np.full(k + 1, -np.inf, np.float32)
    best_id = np.full(k + 1, None, object)
    if index is not None:
        best_s, best_id = (a[0] for a in index.search(query[None], k + 1))
        covered = set(index.manifest.parts)
        uncovered = [name for name in graph.embedding_part_names(root) if name not in covered]
        blocks = graph.iter_group_blocks(root, key, parts=uncovered) if uncovered else ()
        method = graph.ANN_METHOD + (" + exact (parts not indexed yet)" if uncovered else "")
    else:
        blocks = graph.iter_group_blocks(root, key)
        method = "exact"
    for ids, vectors in blocks:
        scores = vectors @ query
        s = np.concatenate([best_s, scores])
        i = np.concatenate([best_id, ids])
        top = np.argsort(-s, kind="stable")[: k + 1]
        best_s, best_id = s[top], i[top]
    keep = [j for j in range(len(best_id)) if best_id[j] is not None and best_id[j] != image_id][:k]
    return pa.table(
        {
            "query": [image_id] * len(keep),
            "backbone": [backbone] * len(keep),
            "rank": list(range(1, len(keep) + 1)),
            "image_id": [best_id[j] for j in keep],
            "similarity": [float(best_s[j]) for j in keep],
            "method": [method] * len(keep),
        },
        schema=RESULT_SCHEMA,
    )
