"""The neighbour graph: each image's top-k most similar images per backbone, weights and precision.

Exact by default: blocked matrix products in torch (on the GPU when there is one) with a running
top-k, so memory is bounded by the block sizes, never by N. Above `ann_threshold` images a group
uses faiss (HNSW, inner product; the `ann` extra), whose recall `bench/neighbors.py` measures.
The graph is rebuilt from all stored embeddings after each run (a rebuild, not an update: a new
image changes other images' neighbours too) and written as one Parquet part per group.

Beside it, linear CKA between each pair of backbones over the images both embedded (centred
Gram-free form ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F), on at most `cka_sample` images).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import lake

__all__ = [
    "AGREEMENT_SCHEMA",
    "NEIGHBORS_SCHEMA",
    "build_neighbor_graph",
    "exact_topk",
    "linear_cka",
]

NEIGHBORS_SCHEMA = lake.NEIGHBORS_SCHEMA
AGREEMENT_SCHEMA = lake.AGREEMENT_SCHEMA

_log = logging.getLogger("embedlake")


def exact_topk(
    vectors: np.ndarray,
    k: int,
    device: str = "cpu",
    query_block: int = 2048,
    key_block: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, similarities) of each row's k nearest other rows by dot product, both (N, k).

    Memory is query_block x (key_block + k) scores at a time, whatever N is.
    """
    import torch

    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    keys_all = torch.from_numpy(np.require(vectors, np.float32, ["C", "W"]))
    out_idx = np.empty((n, k), np.int64)
    out_sim = np.empty((n, k), np.float32)
    with torch.inference_mode():
        for q0 in range(0, n, query_block):
            q = keys_all[q0 : q0 + query_block].to(device)
            rows = torch.arange(q0, q0 + len(q), device=device)
            best_s = torch.full((len(q), k), -float("inf"), device=device)
            best_i = torch.zeros((len(q), k), dtype=torch.long, device=device)
            for k0 in range(0, n, key_block):
                keys = keys_all[k0 : k0 + key_block].to(device)
                scores = q @ keys.T
                cols = torch.arange(k0, k0 + len(keys), device=device)
                scores[rows[:, None] == cols[None, :]] = -float("inf")  # not its own neighbour
                merged_s = torch.cat([best_s, scores], dim=1)
                merged_i = torch.cat([best_i, cols.expand(len(q), -1)], dim=1)
                best_s, pos = merged_s.topk(k, dim=1)
                best_i = merged_i.gather(1, pos)
            out_idx[q0 : q0 + len(q)] = best_i.cpu().numpy()
            out_sim[q0 : q0 + len(q)] = best_s.cpu().numpy()
    return out_idx, out_sim


def _have_faiss(n: int, threshold: int) -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        _log.warning(
            "%d images exceed the ANN threshold %d but faiss is not installed (pip install "
            "'embedlake[ann]'): building the exact graph instead (bounded memory, slower); "
            "neighbors.method says which was used",
            n,
            threshold,
        )
        return False
    return True


def _faiss_topk(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    data = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexHNSWFlat(data.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = max(64, 4 * k)
    index.add(data)
    sims, idx = index.search(data, k + 1)
    keep_idx = np.empty((len(data), k), np.int64)
    keep_sim = np.empty((len(data), k), np.float32)
    for row in range(len(data)):
        mask = idx[row] != row
        found_i, found_s = idx[row][mask][:k], sims[row][mask][:k]
        keep_idx[row, : len(found_i)], keep_sim[row, : len(found_s)] = found_i, found_s
        keep_idx[row, len(found_i) :], keep_sim[row, len(found_s) :] = -1, -np.inf
    return keep_idx, keep_sim


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between two representations of the same rows."""
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    cross = np.linalg.norm(x.T @ y) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _group_name(backbone: str, weights_id: str, precision: str) -> str:
    digest = hashlib.sha256(f"{backbone}|{weights_id}|{precision}".encode()).hexdigest()[:12]
    return f"{backbone}-{precision}-{digest}"


def build_neighbor_graph(
    root: Path | lake.Lake,
    k: int = 10,
    device: str = "cpu",
    ann_threshold: int = 200_000,
    cka_sample: int = 50_000,
) -> dict[str, int]:
    """Rebuild LAKE/neighbors and LAKE/agreement from the embeddings; returns rows per group."""
    root = lake.Lake.at(root)
    table = root.read_table("embeddings")
    written: dict[str, int] = {}
    groups: dict[tuple[str, str, str], tuple[list[str], np.ndarray]] = {}
    keys = (
        table.select(["backbone", "weights_id", "precision"])
        .group_by(["backbone", "weights_id", "precision"])
        .aggregate([])
        .to_pylist()
    )
    for key in keys:
        mask = pc.and_(
            pc.and_(
                pc.equal(table["backbone"], key["backbone"]),
                pc.equal(table["weights_id"], key["weights_id"]),
            ),
            pc.equal(table["precision"], key["precision"]),
        )
        group = table.filter(mask)
        # the embeddings view keeps one row per key; so does this (first written wins)
        ids, first = np.unique(np.asarray(group.column("image_id").to_pylist()), return_index=True)
        group = group.take(pa.array(first))
        vectors = lake.vectors_of(group)
        use_ann = len(ids) > ann_threshold and _have_faiss(len(ids), ann_threshold)
        if use_ann:
            idx, sims = _faiss_topk(vectors, min(k, len(ids) - 1))
        else:
            idx, sims = exact_topk(vectors, k, device)
        n, kk = idx.shape
        valid = idx.reshape(-1) >= 0
        neighbor_ids = np.where(valid, ids[np.clip(idx.reshape(-1), 0, None)], None)
        rows = pa.table(
            {
                "backbone": pa.array([key["backbone"]] * (n * kk), pa.string()),
                "weights_id": pa.array([key["weights_id"]] * (n * kk), pa.string()),
                "precision": pa.array([key["precision"]] * (n * kk), pa.string()),
                "image_id": pa.array(np.repeat(ids, kk), pa.string()),
                "neighbor_id": pa.array(neighbor_ids, pa.string()),
                "rank": pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int16), n)),
                "similarity": pa.array(sims.reshape(-1).astype(np.float32)),
                "method": pa.array(["faiss_hnsw" if use_ann else "exact"] * (n * kk)),
            },
            schema=NEIGHBORS_SCHEMA,
        ).filter(pa.array(valid))
        name = _group_name(*key.values())
        root.write_part(rows, "neighbors", f"{name}.parquet")
        written[name] = rows.num_rows
        groups[(key["backbone"], key["weights_id"], key["precision"])] = (list(ids), vectors)
    for stale in root.part_names("neighbors"):
        if stale.removesuffix(".parquet") not in written and stale != "_schema.parquet":
            root.delete_part("neighbors", stale)
    _write_agreement(root, groups, cka_sample)
    return written


def _write_agreement(root: lake.Lake, groups: dict, cka_sample: int) -> None:
    rows = []
    items = sorted(groups.items())
    for i, ((bb_a, w_a, prec_a), (ids_a, x)) in enumerate(items):
        for (bb_b, w_b, prec_b), (ids_b, y) in items[i + 1 :]:
            if bb_a == bb_b or prec_a != prec_b:
                continue
            pos_b = {image_id: j for j, image_id in enumerate(ids_b)}
            shared = [(j, pos_b[image_id]) for j, image_id in enumerate(ids_a) if image_id in pos_b]
            if len(shared) < 3:
                continue
            if len(shared) > cka_sample:
                pick = np.random.default_rng(0).choice(len(shared), cka_sample, replace=False)
                shared = [shared[p] for p in sorted(pick)]
            a_rows, b_rows = zip(*shared, strict=True)
            cka = linear_cka(x[list(a_rows)].astype(np.float64), y[list(b_rows)].astype(np.float64))
            rows.append(
                {
                    "backbone_a": bb_a,
                    "weights_id_a": w_a,
                    "backbone_b": bb_b,
                    "weights_id_b": w_b,
                    "precision": prec_a,
                    "n_images": len(shared),
                    "linear_cka": cka,
                }
            )
    root.write_part(lake.rows_to_table(rows, AGREEMENT_SCHEMA), "agreement", "agreement.parquet")
