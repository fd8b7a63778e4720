"""The neighbour graph's entry point and backbone agreement (linear CKA), in bounded memory.

`build_neighbor_graph` brings every (backbone, weights_id, precision) group's graph up to date
with the stored embeddings: the images not yet in the graph are added (`tasks/graph.py`: exact
O(M * N) below `ann_threshold` images, a faiss index insert above); `rebuild=True` (the `reindex`
command) recomputes every group from the Parquet. `exact_topk` is the in-memory
exact top-k (`topk.top_k` over row blocks of one array).

Beside it, linear CKA between each pair of backbones over the images both embedded (centred
Gram-free form ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F), on at most `cka_sample` images: the
smallest image_ids, a uniform sample each group keeps in the lake and brings up to date from the
parts a run added, `tasks/samples.py`), summed block by block: the sums X^T Y, X^T X, Y^T Y and
the column sums, never all the vectors in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import graph, lake, topk
from .samples import linear_cka, pair_cka, remove_samples, update_sample

__all__ = [
    "AGREEMENT_SCHEMA",
    "NEIGHBORS_SCHEMA",
    "build_neighbor_graph",
    "exact_topk",
    "linear_cka",
]

NEIGHBORS_SCHEMA = lake.NEIGHBORS_SCHEMA
AGREEMENT_SCHEMA = lake.AGREEMENT_SCHEMA


def exact_topk(
    vectors: np.ndarray,
    k: int,
    device: str = "cpu",
    query_block: int = 2048,
    key_block: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, similarities) of each row's k nearest other rows by dot product, both (N, k).

    Memory is query_block x (key_block + k) scores at a time, whatever N is (`topk.top_k`).
    """
    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    rows = np.arange(n)
    out_idx = np.empty((n, k), np.int64)
    out_sim = np.empty((n, k), np.float32)
    for q0 in range(0, n, query_block):
        mine = rows[q0 : q0 + query_block]
        keys = (
            (rows[k0 : k0 + key_block], vectors[k0 : k0 + key_block])
            for k0 in range(0, n, key_block)
        )
        ids, sims = topk.top_k(vectors[mine], keys, k, query_ids=mine, device=device)
        out_idx[mine], out_sim[mine] = ids.astype(np.int64), sims
    return out_idx, out_sim


def build_neighbor_graph(
    root: Path | lake.Lake,
    k: int = 10,
    device: str = "cpu",
    ann_threshold: int = 200_000,
    cka_sample: int = 50_000,
    rebuild: bool = False,
    search: graph.Searcher = graph.search_here,
    **blocks: int,
) -> dict[str, int]:
    """Update (or `rebuild`) LAKE/neighbors and LAKE/agreement; lists written per group.

    `search`: who runs the ANN searches (`index_shards.RaySearch`: a Ray cluster's workers).
    `blocks`: query_block and key_block of the exact scan (rows per block).
    """
    root = lake.Lake.at(root)
    keys = graph.group_keys(root)
    written = {
        graph.group_name(*key): graph.update_group(
            root,
            key,
            k=k,
            device=device,
            ann_threshold=ann_threshold,
            rebuild=rebuild,
            search=search,
            **blocks,
        )
        for key in keys
    }
    if rebuild:  # parts of groups no stored embedding belongs to any more
        names = {graph.group_name(*key) for key in keys}
        remove_samples(root)  # rebuilt from the parts by _write_agreement
        for part in sorted(set(root.part_names("neighbors")) | set(root.part_names("list_scores"))):
            group = part.removesuffix(".parquet").rsplit("-", 1)[0]
            stale = group not in names and part.removesuffix(".parquet") not in names
            if stale and part != lake.SCHEMA_PART:
                graph.delete_lists_part(root, part)
    _write_agreement(root, keys, cka_sample)
    return written


def _write_agreement(root: lake.Lake, keys: list[lake.GroupKey], cka_sample: int) -> None:
    rows = []
    pairs = [
        (key_a, key_b)
        for i, key_a in enumerate(keys)
        for key_b in keys[i + 1 :]
        if key_a.backbone != key_b.backbone and key_a.precision == key_b.precision
    ]
    # the sample: each group's cka_sample smallest ids (a uniform sample, as ids are SHA-256),
    # kept in the lake with their vectors, and each pair's sums over the ids both hold, brought
    # up to date by what the run added (tasks.samples); groups without a partner are not read
    kept = {
        key: update_sample(root, key, cka_sample) for key in {k for pair in pairs for k in pair}
    }
    for key_a, key_b in pairs:
        (a0, a1), (b0, b1) = kept[key_a], kept[key_b]
        found = pair_cka(root, (key_a, key_b), (a0, b0), (a1, b1))
        if found is None:
            continue
        rows.append(
            {
                "backbone_a": key_a.backbone,
                "weights_id_a": key_a.weights_id,
                "backbone_b": key_b.backbone,
                "weights_id_b": key_b.weights_id,
                "precision": key_a.precision,
                "n_images": found[0],
                "linear_cka": found[1],
            }
        )
    root.write_part(lake.rows_to_table(rows, AGREEMENT_SCHEMA), "agreement", "agreement.parquet")
