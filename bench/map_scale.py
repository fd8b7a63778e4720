"""The map at scale (issue 20 item 5): a synthetic lake's map fitted and written, then 10,000 new
images placed on it (not a test).

What is synthetic: the lake's tables are written directly, not by a run. One group (backbone
mobilenet_v1, weights "synthetic", fp32): N clustered unit vectors (1,000 Gaussian centres,
1024-d, stored float16 as a run stores them, parts of 65,536 rows sorted by image_id, ids are
SHA-256 hex); `files` as one snapshot part per run (the layout a 0.1 lake has, which the views
read as they read a run's), `runs` one 'finished' row per run; `neighbors`: for each image, 10
random members of its own cluster with similarities drawn from U(0.4, 0.6) (sorted): the
graph's size and shape, not an exact search (bench/scale.py measures the graph itself). The
10,000 new images are a second source's run, with their own lists (neighbours among all images
of their cluster).

Then, each in a fresh child process so that its peak RSS is its own: the map's first update
(a fit on `maps.FIT_SAMPLE` images, every other image placed from its neighbours, the part
written), and, after the new images land, the rerun's update (only the new ones placed).

    python bench/map_scale.py [--n 1000000 --new 10000 --dim 1024] [--lake DIR] [--keep]

Results: bench/measured/map-scale-<n>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

BACKBONE, WEIGHTS, PRECISION = "mobilenet_v1", "synthetic", "fp32"
PART_ROWS = 65_536
CENTRES = 1000
K = 10


def _labels(first: int, n: int) -> np.ndarray:
    return np.random.default_rng(first + 1).integers(0, CENTRES, n)


def _vectors(first: int, n: int, dim: int) -> np.ndarray:
    centres = np.random.default_rng(0).normal(size=(CENTRES, dim)).astype(np.float32)
    rng = np.random.default_rng(first + 1)
    x = centres[rng.integers(0, CENTRES, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ids(first: int, n: int) -> np.ndarray:
    return np.asarray(
        [hashlib.sha256(str(i).encode()).hexdigest() for i in range(first, first + n)], object
    )


def _chunks(first: int, n: int):
    for p0 in range(first, first + n, PART_ROWS):
        yield p0, min(PART_ROWS, first + n - p0)


def stage_write(lake_dir: str, first: int, n: int, dim: int, source: str) -> dict:
    """Embeddings, files and a finished run for images first .. first + n (one source), and
    neighbour lists for them among images 0 .. first + n."""
    import pyarrow as pa

    from embedlake.tasks import graph, lake
    from embedlake.tasks.schemas import FILES_SCHEMA, RUNS_SCHEMA

    root = lake.Lake.at(lake_dir).ensure()
    started = datetime.now(UTC) - timedelta(minutes=1)
    run = lake.new_run_id(started)
    key = lake.GroupKey(BACKBONE, WEIGHTS, PRECISION)
    total = first + n
    labels_all = np.concatenate([_labels(p0, rows) for p0, rows in _chunks(0, total)])
    # the cluster members, for random same-cluster neighbours: ids sorted by label
    order = np.argsort(labels_all, kind="stable")
    starts = np.searchsorted(labels_all[order], np.arange(CENTRES + 1))
    all_ids = _ids(0, total)
    rng = np.random.default_rng(first + 7)
    files = []
    for p0, rows in _chunks(first, n):
        ids = all_ids[p0 : p0 + rows]
        table = lake.embeddings_table(
            image_ids=list(ids),
            backbone=BACKBONE,
            weights_id=WEIGHTS,
            precision=PRECISION,
            vectors=_vectors(p0, rows, dim),
            norms=np.ones(rows, np.float32),
            run_id=run,
        )
        root.write_part(table.sort_by("image_id"), "embeddings", f"{run}-{p0:012d}.parquet")
        labels = labels_all[p0 : p0 + rows]
        lo, hi = starts[labels], starts[labels + 1]
        picks = lo[:, None] + (rng.random((rows, K)) * (hi - lo)[:, None]).astype(np.int64)
        neighbors = all_ids[order[picks]]
        sims = -np.sort(-rng.uniform(0.4, 0.6, (rows, K)).astype(np.float32), axis=1)
        graph._write_lists(root, key, graph.Lists(ids, neighbors, sims), "synthetic")
        files.append(ids)
    ids = np.concatenate(files)
    m = len(ids)
    columns = {name: pa.nulls(m, FILES_SCHEMA.field(name).type) for name in FILES_SCHEMA.names}
    columns.update(
        run_id=pa.array([run] * m, pa.string()),
        path=pa.array([f"img/{i}.jpg" for i in ids], pa.string()),
        size_bytes=pa.array(np.full(m, 100_000), pa.int64()),
        image_id=pa.array(ids, pa.string()),
        status=pa.array(["ok"] * m, pa.string()),
        format=pa.array(["JPEG"] * m, pa.string()),
    )
    root.write_part(pa.table(columns, schema=FILES_SCHEMA), "files", f"{run}.parquet")
    row = {
        "run_id": run,
        "stage": "finished",
        "status": "finished",
        "source": source,
        "started_at": started,
        "finished_at": datetime.now(UTC),
        "n_files": m,
        "n_ok": m,
    }
    root.write_part(lake.rows_to_table([row], RUNS_SCHEMA), "runs", f"{run}-1-finished.parquet")
    return {"run_id": run, "images": m}


def stage_catalog(lake_dir: str) -> dict:
    from embedlake.tasks.catalog import build_catalog

    build_catalog(lake_dir)
    return {}


def stage_map(lake_dir: str) -> dict:
    """The map's update as a run's map stage makes it (`maps.update_maps`: the collection as
    `images` shows it, streamed into the placement's session)."""
    from embedlake.tasks import lake, maps

    root = lake.Lake.at(lake_dir)
    started = time.perf_counter()
    outcomes = maps.update_maps(root, lake.new_run_id())
    return {
        "outcomes": [
            {k: round(v, 2) if isinstance(v, float) else v for k, v in o.__dict__.items()}
            for o in outcomes
        ],
        "total_s": round(time.perf_counter() - started, 2),
    }


STAGES = {"write": stage_write, "catalog": stage_catalog, "map": stage_map}


def _child(name: str, *args) -> dict:
    """One stage in a fresh interpreter: its result, seconds and its own peak RSS."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--stage", name, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--lake", help="where to build the lake (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the lake")
    parser.add_argument("--out")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = STAGES[args.stage](*json.loads(args.args))
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(result, default=str))
        return 0
    lake_dir = args.lake or tempfile.mkdtemp(prefix="embedlake-map-scale-")
    report: dict = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "command": " ".join(["python", "bench/map_scale.py", *sys.argv[1:]]),
        "synthetic": __doc__.split("\n\n")[1].replace("\n", " "),
        "n": args.n,
        "new": args.new,
        "dim": args.dim,
        "loadavg_start": os.getloadavg(),
    }
    try:
        print(f"writing {args.n:,} images to {lake_dir}", flush=True)
        report["write_base"] = _child("write", lake_dir, 0, args.n, args.dim, "source-a")
        report["catalog"] = _child("catalog", lake_dir)
        report["loadavg_before_fit"] = os.getloadavg()
        report["map_fit"] = _child("map", lake_dir)
        report["write_new"] = _child("write", lake_dir, args.n, args.new, args.dim, "source-b")
        report["loadavg_before_place"] = os.getloadavg()
        report["map_place_new"] = _child("map", lake_dir)
        report["loadavg_end"] = os.getloadavg()
    finally:
        if not args.keep and not args.lake:
            shutil.rmtree(lake_dir, ignore_errors=True)
    out = Path(args.out or f"bench/measured/map-scale-{args.n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
