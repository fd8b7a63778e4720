"""A reindex's searches on a local Ray cluster of 1 and 2 workers against this process (issue 21,
item 4; not a test).

On bench/scale.py's synthetic collection (N clustered 1024-d unit vectors written as a run writes
them), the product's ANN index is built once (train + insert: the reindex's first half, which
stays in the driver). Then every one of the N vectors is searched for its 10 nearest, as a
reindex does, by:
- `here, 2 threads`: this process, faiss on this machine's OpenMP threads (the default path);
- `here, 1 thread`: the same with faiss held to one thread;
- `ray, 1 worker` / `ray, 2 workers`: `index_shards.RaySearch` on a local cluster started with
  num_cpus 1 / 2 (a task takes one CPU; Ray gives each worker one OpenMP thread), each worker
  mapping the index's segments from the lake.
Every path's lists are checked equal to the first's. Then the whole `embedlake reindex`
(train, insert, searches, lists written, agreement, map refit, catalog) is timed here and with
`--runner ray` (2 workers), each in a fresh process.

    python bench/reindex_ray.py --n 250000

Results: bench/results/reindex-ray-<n>.json (bench/measured/ holds the quoted one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import BACKBONE, PRECISION, WEIGHTS, stage_index, stage_write  # noqa: E402
from throughput import save_result  # noqa: E402

from embedlake.tasks import graph, lake  # noqa: E402

KEY = lake.GroupKey(BACKBONE, WEIGHTS, PRECISION)


def _search_all(root: lake.Lake, search) -> tuple[float, np.ndarray]:
    """Seconds to search every vector of the group through `search`; the neighbour ids."""
    index = graph.open_index(root, KEY)
    blocks = graph.iter_group_blocks(root, KEY, block_rows=65_536)
    started = time.perf_counter()
    names = [found for _, _, found in search(index, blocks, 10)]
    return time.perf_counter() - started, np.concatenate(names)


def _on_ray(root: lake.Lake, cpus: int) -> dict:
    import ray

    from embedlake.tasks.index_shards import RaySearch

    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    up = time.perf_counter() - started
    try:
        ray.get([ray.remote(num_cpus=1)(lambda: None).remote() for _ in range(cpus)])  # warm
        seconds, names = _search_all(root, RaySearch())
    finally:
        ray.shutdown()
    return {"cluster_start_s": round(up, 1), "search_s": round(seconds, 1), "names": names}


def _reindex(lake_dir: str, env: dict, *runner: str) -> dict:
    command = [sys.executable, "-m", "embedlake.flows.cli", "reindex", "--lake", lake_dir]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--device", "cpu", *runner], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return {"wall_s": round(time.perf_counter() - started, 1), "printed": done.stdout.strip()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=250_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--no-reindex", action="store_true", help="the searches alone")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import faiss

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    result: dict = {
        "n": args.n,
        "dim": args.dim,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "command": f"python bench/reindex_ray.py --n {args.n}",
    }
    with tempfile.TemporaryDirectory(prefix="embedlake-reindex-ray-") as tmp:
        lake_dir = str(Path(tmp) / "lake")
        stage_write(lake_dir, 0, args.n, args.dim, "r0", "float16")
        result["index"] = stage_index(lake_dir)  # train + insert, in this process
        root = lake.Lake.at(lake_dir)
        searches: dict = {}
        threads = faiss.omp_get_max_threads()
        seconds, reference = _search_all(root, graph.search_here)
        searches[f"here, {threads} threads"] = {"search_s": round(seconds, 1)}
        faiss.omp_set_num_threads(1)
        seconds, names = _search_all(root, graph.search_here)
        faiss.omp_set_num_threads(threads)
        searches["here, 1 thread"] = {
            "search_s": round(seconds, 1),
            "equal": bool((names == reference).all()),
        }
        for cpus in (1, 2):
            found = _on_ray(root, cpus)
            found["equal"] = bool((found.pop("names") == reference).all())
            searches[f"ray, {cpus} worker{'s' * (cpus > 1)}"] = found
        result["searches"] = searches
        one, two = searches["ray, 1 worker"]["search_s"], searches["ray, 2 workers"]["search_s"]
        result["speedup_2_workers_over_1"] = round(one / two, 2)
        result["ms_per_query_1_worker"] = round(1000 * one / args.n, 3)
        for name, found in searches.items():
            print(f"{name:>18}: {found['search_s']:8.1f} s  {found}")
        print(f"2 workers over 1: x{result['speedup_2_workers_over_1']}")
        if not args.no_reindex:
            env = dict(os.environ, HF_HUB_OFFLINE="1", EMBEDLAKE_CACHE=str(Path(tmp) / "cache"))
            result["reindex"] = {
                "here": _reindex(lake_dir, env),
                "ray, 2 workers": _reindex(lake_dir, env, "--runner", "ray"),
            }
            print(json.dumps(result["reindex"], indent=1))
    save_result(result, args.out or f"bench/results/reindex-ray-{args.n}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
