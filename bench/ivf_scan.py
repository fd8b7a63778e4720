"""A batch of graph searches on a group's index: faiss's scan against the batched one (not a test).

An update's searches (its new images' lists) go through `GroupIndex.search`, which scans each
segment's probed lists. This times that call on the lake bench/scale.py left, `--queries` new
vectors of its synthetic collection at once, each segment scanned either by faiss query by query
(`search_preassigned`, parallel mode 3) or list by list as matrix products (tasks/ivf_scan.py),
the two alternated `--repeat` times in this one process (the same index, queries and page
cache), wall and CPU seconds, and how many of the ids agree (ties may swap).

    python bench/ivf_scan.py --lake /work/tmp/scale10m --queries 10000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_scale import this_code  # noqa: E402
from scale import BACKBONE, PRECISION, WEIGHTS, _vectors  # noqa: E402
from throughput import save_result  # noqa: E402

from embedlake.tasks import graph, ivf_scan, lake  # noqa: E402

WAYS = {"faiss": 10**9, "batched": ivf_scan.MIN_QUERIES_PER_LIST}  # MIN_QUERIES_PER_LIST


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", help="default: bench/measured/ivf-scan-<queries>.json")
    args = parser.parse_args()
    import faiss

    root = lake.Lake.at(args.lake)
    index = graph.open_index(root, lake.GroupKey(BACKBONE, WEIGHTS, PRECISION))
    # vectors of the collection past any the lake holds (its ids stop below 10**9)
    queries = _vectors(10**9, args.queries, index.manifest.dim)
    result: dict = {
        "what": __doc__.split("\n\n")[0],
        "command": "python " + " ".join(sys.argv),
        "code": this_code(),
        "lake": args.lake,
        "ntotal": index.ntotal,
        "segments": len(index.segments()),
        "nlist": index.manifest.nlist,
        "nprobe": index.nprobe,
        "queries": args.queries,
        "threads": faiss.omp_get_max_threads(),
        "measured_at": datetime.now(UTC).isoformat(),
        "runs": {way: [] for way in WAYS},
    }
    answers = {}
    for _ in range(args.repeat):
        for way, floor in WAYS.items():
            ivf_scan.MIN_QUERIES_PER_LIST = floor
            wall, cpu = time.perf_counter(), time.process_time()
            sims, ids = index.search(queries, args.k)
            run = {
                "seconds": round(time.perf_counter() - wall, 2),
                "cpu_seconds": round(time.process_time() - cpu, 2),
            }
            result["runs"][way].append(run)
            answers[way] = (sims, ids)
            print(way, run, flush=True)
    (s0, i0), (s1, i1) = answers["faiss"], answers["batched"]
    result["same_ids_share"] = round(float((i0 == i1).mean()), 6)
    result["max_similarity_difference"] = float(np.max(np.abs(s0 - s1)))
    best = {way: min(r["seconds"] for r in runs) for way, runs in result["runs"].items()}
    result["best_seconds"] = best
    result["speedup"] = round(best["faiss"] / best["batched"], 2)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    save_result(result, args.out or f"bench/measured/ivf-scan-{args.queries}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
