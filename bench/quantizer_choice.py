"""Which coarse quantiser puts the vectors in their IVF lists (issue 21, item 3; not a test).

The product's IVF index (`ann_index.FACTORY`: 8-bit codes, its nlist and training-sample rules,
nprobe 32) on bench/scale.py's synthetic collection, with three coarse quantisers:

- `HNSW32, efSearch 16`: faiss's default search of the HNSW graph over the centroids (recall@10
  0.911 at 1 M: a tenth of the vectors went to another list than their nearest centroid's);
- `HNSW32, efSearch 128`: the product's until this bench (`QUANTIZER_EF`; 0.973 at 1 M);
- `flat`: an exact scan of the centroids, nlist x dim dot products per vector, done by faiss as
  one matrix product per block of vectors.

For each: train, add (every vector; seconds, and per million), recall@10 against an exact scan on
`--queries` rows (their own row excluded), search milliseconds per query in one batch and for
single queries (the `nearest` command's case), and the trained index's bytes. The three run
alternately on the same collection, sample and truth, in this one process.

    python bench/quantizer_choice.py --n 1000000 --queries 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recall_codes import _collection, _exact_truth, _recall, _without_self  # noqa: E402
from throughput import save_result  # noqa: E402

from embedlake.tasks import ann_index  # noqa: E402

QUANTIZERS = {
    "HNSW32, efSearch 16": ("_HNSW32", 16),
    "HNSW32, efSearch 128": ("_HNSW32", 128),
    "flat": ("", None),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="queries searched one by one")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", help="default: bench/measured/quantizer-choice-<N>.json")
    args = parser.parse_args()
    import faiss

    k = args.k
    started = time.perf_counter()
    x = _collection(args.n, args.dim)
    queries, truth = _exact_truth(x, args.queries, k)
    nlist = max(1, min(ann_index._nlist(args.n), args.n // ann_index.TRAIN_PER_LIST))
    sample = x[np.random.default_rng(3).choice(args.n, nlist * ann_index.TRAIN_PER_LIST, False)]
    result: dict = {
        "what": __doc__.split("\n\n")[0],
        "command": "python " + " ".join(sys.argv),
        "n": args.n,
        "dim": args.dim,
        "k": k,
        "nlist": nlist,
        "nprobe": ann_index.NPROBE,
        "queries": args.queries,
        "faiss": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "measured_at": datetime.now(UTC).isoformat(),
        "setup_seconds": round(time.perf_counter() - started, 1),
        "quantizers": {},
    }
    for label, (kind, ef) in QUANTIZERS.items():
        factory = f"IVF{nlist}{kind},SQ8"
        index = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - t0
        ivf = faiss.extract_index_ivf(index)
        if ef is not None:
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = ef
        trained_bytes = faiss.serialize_index(index).nbytes
        t0 = time.perf_counter()
        for first in range(0, args.n, 65_536):
            index.add(x[first : first + 65_536])
        add_s = time.perf_counter() - t0
        ivf.nprobe = ann_index.NPROBE
        t0 = time.perf_counter()
        _, labels = index.search(x[queries], k + 1)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for q in queries[: args.single]:
            index.search(x[q : q + 1], k + 1)
        single_s = time.perf_counter() - t0
        row = {
            "factory": factory,
            "quantizer_ef_search": ef,
            "train_s": round(train_s, 1),
            "add_s": round(add_s, 1),
            "add_s_per_million": round(add_s * 1e6 / args.n, 1),
            "recall_at_10": round(_recall(_without_self(labels, queries, k), truth), 4),
            "search_ms_per_query_batch": round(1000 * batch_s / len(queries), 2),
            "search_ms_single_query": round(1000 * single_s / min(args.single, len(queries)), 2),
            "trained_index_bytes": int(trained_bytes),
        }
        result["quantizers"][label] = row
        print(label, row, flush=True)
        del index
    adds = {label: row["add_s"] for label, row in result["quantizers"].items()}
    result["add_speedup_flat_over_hnsw_ef128"] = round(
        adds["HNSW32, efSearch 128"] / adds["flat"], 2
    )
    save_result(result, args.out or f"bench/measured/quantizer-choice-{args.n}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
