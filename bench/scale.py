"""The lake at scale: synthetic unit vectors through the product's writer, graph and catalog.

One group (backbone mobilenet_v1, N x DIM float32 clustered unit vectors), written as a run
writes them (`lake.embeddings_table` + `Lake.write_part`, 65,536 rows a part). Then, each stage in
a fresh child process so that its peak RSS is its own: the full reindex (graph and index from the
Parquet), graph updates after adding +0.1 % and +1 % new images, `nearest` latency (the catalog
macro, and the faiss index: load + one search), `count(*)` on `embeddings`, lake bytes, and the
graph's recall@10 against exact top-10 on a sample of images.

    python bench/scale.py --n 1000000 [--dim 1024 --ann-threshold 200000 --lake DIR]

Results: bench/measured/scale-<n>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

BACKBONE, WEIGHTS, PRECISION = "mobilenet_v1", "synthetic", "fp32"
PART_ROWS = 65_536
CENTRES = 1000


def _vectors(first: int, n: int, dim: int) -> np.ndarray:
    """Rows first .. first + n of the synthetic collection (each part seeded on its own)."""
    centres = np.random.default_rng(0).normal(size=(CENTRES, dim)).astype(np.float32)
    rng = np.random.default_rng(first + 1)
    x = centres[rng.integers(0, CENTRES, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ids(first: int, n: int) -> list[str]:
    return [f"{i:064x}" for i in range(first, first + n)]


def stage_write(lake_dir: str, first: int, n: int, dim: int, run: str) -> dict:
    from embedlake.tasks import lake

    root = lake.Lake.at(lake_dir).ensure()
    for p0 in range(first, first + n, PART_ROWS):
        rows = min(PART_ROWS, first + n - p0)
        table = lake.embeddings_table(
            image_ids=_ids(p0, rows),
            backbone=BACKBONE,
            weights_id=WEIGHTS,
            precision=PRECISION,
            vectors=_vectors(p0, rows, dim),
            norms=np.ones(rows, np.float32),
            run_id=run,
        )
        root.write_part(table, "embeddings", f"{run}-{p0:012d}.parquet")
    return {}


def stage_graph(lake_dir: str, rebuild: bool, ann_threshold: int) -> dict:
    from embedlake.tasks.neighbors import build_neighbor_graph

    written = build_neighbor_graph(lake_dir, k=10, ann_threshold=ann_threshold, rebuild=rebuild)
    return {"lists_written": sum(written.values())}


def stage_catalog(lake_dir: str) -> dict:
    from embedlake.tasks.catalog import build_catalog

    build_catalog(lake_dir)
    return {}


def stage_queries(lake_dir: str, n: int, repeats: int = 5) -> dict:
    from embedlake.tasks import graph, lake
    from embedlake.tasks.catalog import connect_read_only

    out: dict = {}
    query_id = _ids(n // 2, 1)[0]
    with connect_read_only(lake_dir, memory_limit="8GB") as con:
        for label, sql, params in (
            ("count_s", "SELECT count(*) FROM embeddings", []),
            ("nearest_macro_s", "SELECT * FROM nearest(?, ?, 10)", [query_id, BACKBONE]),
            (
                "neighbors_view_one_image_s",
                "SELECT * FROM neighbors WHERE image_id = ?",
                [query_id],
            ),
        ):
            times = []
            for _ in range(repeats if label == "count_s" else 2):
                started = time.perf_counter()
                con.execute(sql, params).fetchall()
                times.append(time.perf_counter() - started)
            out[label] = round(min(times), 3)
    root = lake.Lake.at(lake_dir)
    key = (BACKBONE, WEIGHTS, PRECISION)
    started = time.perf_counter()
    index, _ = graph.load_index(root, key)
    out["index_load_s"] = round(time.perf_counter() - started, 3)
    if index is not None:
        vector = _vectors(n // 2, 1, index.d)
        started = time.perf_counter()
        index.search(vector, 11)
        out["index_search_s"] = round(time.perf_counter() - started, 4)
    return out


def stage_recall(lake_dir: str, n: int, sample: int) -> dict:
    """Graph lists of `sample` images against their exact top-10 (a blocked scan of all vectors)."""
    import duckdb
    import pyarrow as pa

    from embedlake.tasks import graph, lake

    root = lake.Lake.at(lake_dir)
    key = (BACKBONE, WEIGHTS, PRECISION)
    picks = np.random.default_rng(2).choice(n, sample, replace=False)
    query_ids = [_ids(int(p), 1)[0] for p in picks]
    wanted = pa.array(query_ids, pa.string())
    found = {
        i: v
        for ids, vecs in graph.iter_group_blocks(root, key, only=wanted)
        for i, v in zip(ids, vecs, strict=True)
    }
    queries = np.stack([found[i] for i in query_ids])
    best_s = np.full((sample, 10), -np.inf, np.float32)
    best_i = np.full((sample, 10), None, object)
    for ids, vectors in graph.iter_group_blocks(root, key, block_rows=65_536):
        scores = queries @ vectors.T
        scores[np.asarray(query_ids, object)[:, None] == ids[None, :]] = -np.inf
        s = np.concatenate([best_s, scores], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
        order = np.argsort(-s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    con = duckdb.connect()
    lists = dict(
        con.execute(
            "SELECT image_id, list(neighbor_id) FROM ("
            " FROM read_parquet(?, filename = true) WHERE image_id IN (SELECT unnest(?))"
            " QUALIFY filename = max(filename) OVER (PARTITION BY image_id)) GROUP BY ALL",
            [f"{root.path}/neighbors/*-*.parquet", query_ids],
        ).fetchall()
    )
    hits = [len(set(lists.get(q, [])) & set(best_i[r])) / 10 for r, q in enumerate(query_ids)]
    return {"recall_at_10": round(float(np.mean(hits)), 4), "sample": sample}


STAGES = {
    "write": stage_write,
    "graph": stage_graph,
    "catalog": stage_catalog,
    "queries": stage_queries,
    "recall": stage_recall,
}


def _child(name: str, *args) -> dict:
    """Run one stage in a fresh interpreter: its seconds and its own peak RSS."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--stage", name, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"  {name}{list(args)[1:]}: {result}", flush=True)
    return result


def _lake_bytes(lake_dir: str) -> dict:
    sizes = {}
    for folder in Path(lake_dir).iterdir():
        if folder.is_dir():
            sizes[folder.name] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--ann-threshold", type=int, default=200_000)
    parser.add_argument("--recall-sample", type=int, default=200)
    parser.add_argument("--lake", help="default: a temporary folder under /work/tmp")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = STAGES[args.stage](*json.loads(args.args))
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(result))
        return 0

    lake_dir = args.lake or tempfile.mkdtemp(prefix="scale-", dir="/work/tmp")
    n, dim = args.n, args.dim
    result: dict = {
        "n": n,
        "dim": dim,
        "ann_threshold": args.ann_threshold,
        "lake": lake_dir,
        "started_at": datetime.now(UTC).isoformat(),
        "stages": {},
    }
    stages = result["stages"]
    stages["write"] = _child("write", lake_dir, 0, n, dim, "base")
    stages["reindex"] = _child("graph", lake_dir, True, args.ann_threshold)
    added = n
    for label, fraction in (("update_0.1pct", 0.001), ("update_1pct", 0.01)):
        m = int(n * fraction)
        stages[f"write_{label}"] = _child("write", lake_dir, added, m, dim, f"add{m}")
        stages[label] = _child("graph", lake_dir, False, args.ann_threshold)
        stages[label]["images_added"] = m
        added += m
    stages["catalog"] = _child("catalog", lake_dir)
    stages["queries"] = _child("queries", lake_dir, added)
    stages["recall"] = _child("recall", lake_dir, added, args.recall_sample)
    result["lake_bytes"] = _lake_bytes(lake_dir)
    out = Path(f"bench/measured/scale-{n}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'stage':<16}{'seconds':>10}{'peak RSS MiB':>14}")
    for name, stage in stages.items():
        print(f"{name:<16}{stage['seconds']:>10}{stage['peak_rss_mib']:>14}")
    print("queries:", stages["queries"])
    print("recall@10:", stages["recall"]["recall_at_10"])
    print("lake bytes:", result["lake_bytes"])
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
