"""How many inverted lists a graph search probes (issue 21, item 3; not a test).

The product's IVF index (`ann_index.FACTORY`, its nlist and training-sample rules, the exact
coarse quantiser) on bench/scale.py's synthetic collection at each `--sizes` N, searched at each
`--nprobes`: recall@10 against an exact scan on `--queries` rows (their own row excluded), and
search milliseconds per query in one batch (an update's or a reindex's case: its scan of
nprobe x N / nlist codes is most of a graph update at 10 M). Every nprobe runs on the same
index, queries and truth, in this one process. At 10 M, the lake bench/scale.py leaves measures
the same thing (`--again recall_last`).

    python bench/nprobe_choice.py --sizes 20000,200000,1000000 --queries 1000
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


def measure(n: int, dim: int, n_queries: int, nprobes: list[int], k: int = 10) -> dict:
    """One size: the product's index built and searched at each nprobe."""
    import faiss

    started = time.perf_counter()
    x = _collection(n, dim)
    queries, truth = _exact_truth(x, n_queries, k)
    nlist = max(1, min(ann_index._nlist(n), n // ann_index.TRAIN_PER_LIST))
    sample = x[np.random.default_rng(3).choice(n, nlist * ann_index.TRAIN_PER_LIST, False)]
    index = faiss.index_factory(
        dim, ann_index.FACTORY.format(nlist=nlist), faiss.METRIC_INNER_PRODUCT
    )
    index.train(sample)
    for first in range(0, n, 65_536):
        index.add(x[first : first + 65_536])
    out: dict = {"nlist": nlist, "setup_s": round(time.perf_counter() - started, 1)}
    ivf = faiss.extract_index_ivf(index)
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        t0 = time.perf_counter()
        _, labels = index.search(x[queries], k + 1)
        seconds = time.perf_counter() - t0
        out[f"nprobe_{nprobe}"] = {
            "recall_at_10": round(_recall(_without_self(labels, queries, k), truth), 4),
            "ms_per_query": round(1000 * seconds / len(queries), 3),
        }
        print(n, nprobe, out[f"nprobe_{nprobe}"], flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,200000,1000000")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobes", default="8,12,16,24,32")
    parser.add_argument("--out", default="bench/measured/nprobe-choice.json")
    args = parser.parse_args()
    import faiss

    result: dict = {
        "what": __doc__.split("\n\n")[0],
        "command": "python " + " ".join(sys.argv),
        "dim": args.dim,
        "queries": args.queries,
        "product_nprobe": ann_index.NPROBE,
        "faiss": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "measured_at": datetime.now(UTC).isoformat(),
        "sizes": {},
    }
    nprobes = [int(p) for p in args.nprobes.split(",")]
    for n in (int(s) for s in args.sizes.split(",")):
        result["sizes"][str(n)] = measure(n, args.dim, args.queries, nprobes)
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
