"""Neighbour-graph and `nearest` benchmark on synthetic unit vectors (not a test).

Reports, in one run: the exact blocked top-k build rate (images/s) on graph_n vectors and the
latency of one `nearest(image_id, backbone, k)` query through the read-only catalog at N x DIM.
The faiss index is measured by bench/index_choice.py, the maintained graph by bench/scale.py.

    python bench/neighbors.py [--n 100000 --dim 1024 --graph-n 20000 --k 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--graph-n", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    import pyarrow as pa

    from embedlake.tasks import lake
    from embedlake.tasks.catalog import build_catalog, connect_read_only
    from embedlake.tasks.neighbors import exact_topk

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, args.dim)).astype(np.float32)
    x = centres[rng.integers(0, 200, args.n)] + rng.normal(size=(args.n, args.dim)).astype(
        np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    result: dict = {
        "n": args.n,
        "dim": args.dim,
        "k": args.k,
        "graph_n": args.graph_n,
        "started_at": datetime.now(UTC).isoformat(),
    }

    # exact: quadratic, so measured on graph_n vectors (the rate falls as 1/N beyond)
    sub = x[: args.graph_n]
    started = time.perf_counter()
    exact_topk(sub, args.k)
    result["exact_graph_images_per_second"] = args.graph_n / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="embedlake-nn-") as tmp:
        root = lake.ensure_lake(Path(tmp) / "lake")
        ids = [f"{i:064x}" for i in range(args.n)]
        step = 25_000
        for part, start in enumerate(range(0, args.n, step)):
            table = lake.embeddings_table(
                image_ids=ids[start : start + step],
                backbone="mobilenet_v1",
                weights_id="w",
                precision="fp32",
                vectors=x[start : start + step],
                norms=np.ones(min(step, args.n - start), np.float32),
                run_id="bench",
            )
            lake.write_part_atomically(
                pa.concat_tables([table]), root / "embeddings" / f"bench-{part:04d}.parquet"
            )
        build_catalog(root)
        timings = []
        with connect_read_only(root, memory_limit="8GB") as con:
            for i in range(6):
                started = time.perf_counter()
                con.execute(
                    "SELECT * FROM nearest($id, 'mobilenet_v1', $k)",
                    {"id": ids[i * 997], "k": args.k},
                ).fetchall()
                timings.append(time.perf_counter() - started)
        result["nearest_latency_seconds_median"] = statistics.median(timings[1:])
        result["nearest_latency_seconds_first"] = timings[0]

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"neighbors-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
