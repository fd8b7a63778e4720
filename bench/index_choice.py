"""Which faiss index the maintained graph uses, and float16 vector storage (not a test).

On N synthetic clustered unit vectors (as bench/neighbors.py), per candidate index: build
(train + add) seconds, bytes per vector (the serialised index / N), recall@10 against exact on
a sample of queries, and search milliseconds per query; and the exact graph's recall@10 when the
vectors are stored as float16 instead of float32 (item 7 of issue 11).

    python bench/index_choice.py [--n 100000 --dim 1024 --queries 500]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

CANDIDATES = {
    "HNSW32 (flat)": ("HNSW32", {"efSearch": 64}),
    "HNSW32,SQ8": ("HNSW32,SQ8", {"efSearch": 64}),
    "IVF,SQ8": ("IVF{nlist},SQ8", {"nprobe": 32}),
}
# product quantisation: ~4 minutes to train on 2 cores and recall@10 0.49 (PQ128) / 0.34 (PQ64)
# at 20,000 x 1024 (bench/measured/index-choice-20k.json); measured on request only
PQ = {
    "IVF,PQ128": ("IVF{nlist},PQ128", {"nprobe": 32}),
    "IVF,PQ64": ("IVF{nlist},PQ64", {"nprobe": 32}),
}


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_neighbours(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    from embedlake.tasks import topk

    rows = np.arange(len(x))
    blocks = ((rows[i : i + 65_536], x[i : i + 65_536]) for i in range(0, len(x), 65_536))
    found, _ = topk.top_k(x[queries], blocks, k, query_ids=queries)
    return found.astype(np.int64)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--with-pq", action="store_true", help="also the PQ indexes (slow)")
    parser.add_argument("--out", default="bench/measured/index-choice.json")
    args = parser.parse_args()
    import faiss

    x = clustered(args.n, args.dim)
    queries = np.random.default_rng(1).choice(args.n, args.queries, replace=False)
    truth = exact_neighbours(x, queries, args.k)
    result: dict = {
        "n": args.n,
        "dim": args.dim,
        "k": args.k,
        "queries": args.queries,
        "started_at": datetime.now(UTC).isoformat(),
        "indexes": {},
    }
    nlist = int(4 * np.sqrt(args.n))
    for label, (factory, knobs) in (CANDIDATES | (PQ if args.with_pq else {})).items():
        started = time.perf_counter()
        index = faiss.index_factory(
            args.dim, factory.format(nlist=nlist), faiss.METRIC_INNER_PRODUCT
        )
        index.train(x[: min(args.n, 65_536)])
        index.add(x)
        build = time.perf_counter() - started
        if "nprobe" in knobs:
            faiss.extract_index_ivf(index).nprobe = knobs["nprobe"]
        else:
            index.hnsw.efSearch = knobs["efSearch"]
        started = time.perf_counter()
        _, labels = index.search(x[queries], args.k + 1)
        search = time.perf_counter() - started
        found = np.array(
            [[i for i in row if i != q][: args.k] for row, q in zip(labels, queries, strict=True)]
        )
        row = {
            "factory": factory.format(nlist=nlist),
            **knobs,
            "build_s": round(build, 1),
            "bytes_per_vector": round(len(faiss.serialize_index(index)) / args.n, 1),
            "recall_at_10": round(recall(found, truth), 4),
            "search_ms_per_query": round(1000 * search / args.queries, 2),
        }
        row["gib_at_10m"] = round(row["bytes_per_vector"] * 10e6 / 2**30, 1)
        result["indexes"][label] = row
        print(label, row, flush=True)
        del index
    half = x.astype(np.float16).astype(np.float32)
    result["float16_storage_recall_at_10"] = round(
        recall(exact_neighbours(half, queries, args.k), truth), 4
    )
    print("float16 storage: exact graph recall@10", result["float16_storage_recall_at_10"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
