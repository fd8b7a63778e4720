"""Where the ANN graph's recall@10 is lost, and what wins it back (issue 21, item 3; not a test).

On bench/scale.py's synthetic collection (1,000 clustered centres, 1024-d unit vectors: the data
on which the product's lists had recall@10 0.915 at 1 M and 0.921 at 10 M), with the product's
index recipe as it was then (`IVF{nlist}_HNSW32,SQ8`: an HNSW graph over the centroids as the coarse
quantiser, since replaced by an exact one, bench/quantizer_choice.py; its nlist and
training-sample rules, nprobe 32):

- `SQ8`: the product's index as it is (8-bit codes);
- `SQfp16`: the same IVF with 16-bit float codes (twice the code bytes; the lake stores vectors
  as float16 anyway, so these distances are the stored vectors' own);
- `SQ8 + re-rank R`: the SQ8 index's R best candidates re-scored exactly from the vectors as the
  lake stores them (float16) and the best 10 kept;
- `nprobe 128`: SQ8 probing four times the lists;
- `--quantizer-ef`: how widely the HNSW graph over the centroids is searched to put a vector in
  its list (the product's `ann_index.QUANTIZER_EF`; faiss's default is 16, which at 1 M was the
  limit: see the JSON's `followup`).

Recall@10 of each against an exact scan over every vector, on `--queries` rows of the
collection (their own row excluded), search milliseconds per query, and code bytes per vector.

    python bench/recall_codes.py --n 1000000 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import _vectors  # noqa: E402  (the same collection as bench/scale.py's)

from embedlake.tasks import ann_index, topk  # noqa: E402

HNSW_FACTORY = "IVF{nlist}_HNSW32,SQ8"  # the product's ann_index.FACTORY when this was measured


def _collection(n: int, dim: int) -> np.ndarray:
    x = np.empty((n, dim), np.float32)
    for first in range(0, n, 65_536):
        x[first : first + 65_536] = _vectors(first, min(65_536, n - first), dim)
    return x


def _exact_truth(x: np.ndarray, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`n_queries` rows of x (rng 7, sorted) and their exact top-k, their own row excluded."""
    n = len(x)
    queries = np.sort(np.random.default_rng(7).choice(n, n_queries, replace=False))
    rows = np.arange(n)
    blocks = ((rows[i : i + 65_536], x[i : i + 65_536]) for i in range(0, n, 65_536))
    truth, _ = topk.top_k(x[queries], blocks, k, query_ids=queries)
    return queries, truth


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)])
    )


def _without_self(labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.array(
        [[i for i in row if i != q][:k] for row, q in zip(labels, queries, strict=True)]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--quantizer-ef",
        type=int,
        default=ann_index.QUANTIZER_EF,
        help="efSearch of the HNSW over the centroids (the product's; faiss's default: 16)",
    )
    parser.add_argument("--out", help="default: bench/measured/recall-codes-<N>.json")
    args = parser.parse_args()
    import faiss

    k = args.k
    started = time.perf_counter()
    x = _collection(args.n, args.dim)
    stored = x.astype(np.float16)  # as the lake keeps them
    queries, truth = _exact_truth(x, args.queries, k)
    result: dict = {
        "what": __doc__.split("\n\n")[0],
        "command": "python " + " ".join(sys.argv),
        "n": args.n,
        "dim": args.dim,
        "k": k,
        "queries": args.queries,
        "quantizer_ef": args.quantizer_ef,
        "measured_at": datetime.now(UTC).isoformat(),
        "setup_seconds": round(time.perf_counter() - started, 1),
        "variants": {},
    }
    nlist = max(1, min(ann_index._nlist(args.n), args.n // ann_index.TRAIN_PER_LIST))
    sample = x[np.random.default_rng(3).choice(args.n, nlist * ann_index.TRAIN_PER_LIST, False)]

    def build(codes: str):
        factory = HNSW_FACTORY.format(nlist=nlist).replace(",SQ8", f",{codes}")
        t0 = time.perf_counter()
        index = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
        quantizer.hnsw.efSearch = args.quantizer_ef
        index.add(x)
        return index, factory, time.perf_counter() - t0

    def measure(label, index, factory, build_s, nprobe=ann_index.NPROBE, rerank=0):
        faiss.extract_index_ivf(index).nprobe = nprobe
        t0 = time.perf_counter()
        _, labels = index.search(x[queries], max(k, rerank) + 1)
        if rerank:  # exact scores of the candidates, from the stored float16 vectors
            found = []
            for q, row in zip(queries, labels, strict=True):
                cand = np.array([i for i in row if i >= 0 and i != q])
                sims = stored[cand].astype(np.float32) @ x[q]
                found.append(cand[np.argsort(-sims, kind="stable")[:k]])
            found = np.array(found)
        else:
            found = _without_self(labels, queries, k)
        seconds = time.perf_counter() - t0
        invlists = faiss.extract_index_ivf(index).invlists
        row = {
            "factory": factory,
            "nprobe": nprobe,
            "rerank_candidates": rerank or None,
            "build_s": round(build_s, 1),
            "code_bytes_per_vector": invlists.code_size,
            "recall_at_10": round(_recall(found, truth), 4),
            "search_ms_per_query": round(1000 * seconds / args.queries, 2),
        }
        result["variants"][label] = row
        print(label, row, flush=True)

    index, factory, seconds = build("SQ8")
    measure("SQ8 (the product's)", index, factory, seconds)
    measure("SQ8, nprobe 128", index, factory, seconds, nprobe=128)
    for rerank in (20, 40):
        measure(f"SQ8 + re-rank {rerank}", index, factory, seconds, rerank=rerank)
    del index
    index, factory, seconds = build("SQfp16")
    measure("SQfp16", index, factory, seconds)
    del index
    out = Path(args.out or f"bench/measured/recall-codes-{args.n}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
