"""nearest: a stored image's k most similar images, under the same backbone, weights and precision.

`graph.search_group` answers: a group with an ANN index (`ann_index`, made once the group outgrows
`ann_threshold`) is searched through it, one mapped segment at a time, plus an exact scan of the
embedding parts the index does not cover yet (a run whose graph update did not happen: normally
none); a smaller group is scanned exactly, a block at a time (`topk.top_k`). The query's own
vector comes from a point lookup (`sql/search/query_vector.sql`): embedding parts are sorted by
image_id in row groups of `lake.ROW_GROUP_ROWS` rows, so the lookup reads one row group's ids per
part, and one vector. Memory follows one index segment or one block, whatever the collection's
size. The catalog's `nearest` macro answers the same question in SQL by a scan of every vector
(exact; fine for small lakes).
"""

from __future__ import annotations

from pathlib import Path

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
) -> tuple[lake.GroupKey, np.ndarray]:
    """The image's stored vector under `backbone` (its latest, when several groups hold it).

    DuckDB reads the parts' footers, skips the row groups whose image_id min/max exclude the id
    (a part sorted by image_id keeps one), and reads vectors only where the id is found.
    """
    import duckdb

    from .catalog import sql_text

    con = duckdb.connect()
    root.register(con)
    row = con.execute(
        sql_text("search", "query_vector.sql"),
        {"parts": root.location("embeddings", "*.parquet"), "id": image_id, "backbone": backbone},
    ).fetchone()
    if row is None:
        raise NearestError(f"the lake holds no {backbone} embedding of image {image_id}")
    return lake.GroupKey(backbone, row[0], row[1]), np.asarray(row[2], np.float32)


def nearest(root: str | Path | lake.Lake, image_id: str, backbone: str, k: int = 10) -> pa.Table:
    """The k images most like `image_id` under `backbone` (RESULT_SCHEMA), nearest first."""
    if k < 1:
        raise NearestError("k must be at least 1")
    root = lake.Lake.at(root)
    key, query = _query_vector(root, image_id, backbone)
    ids, sims, method = graph.search_group(
        root, key, query[None], k, query_ids=np.array([image_id], object)
    )
    keep = [j for j in range(k) if ids[0, j] is not None]
    return pa.table(
        {
            "query": [image_id] * len(keep),
            "backbone": [backbone] * len(keep),
            "rank": list(range(1, len(keep) + 1)),
            "image_id": [ids[0, j] for j in keep],
            "similarity": [float(sims[0, j]) for j in keep],
            "method": [method] * len(keep),
        },
        schema=RESULT_SCHEMA,
    )
