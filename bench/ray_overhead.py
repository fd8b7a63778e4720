"""What `--runner ray` costs against the local runner on the same collection (not a test).

Both runs start from an empty lake and embed the same generated 640x480 JPEGs with random
weights on this machine's CPUs; Ray is started by the run (`--runner ray`), as a user would.
Reported: wall time of each `embedlake run` process, and the flow's own time from the `runs`
table (which excludes interpreter start-up and, for Ray, the cluster's start-up).

    python bench/ray_overhead.py --images 64 --shard-size 32
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from scale_run import _run_env  # noqa: E402
from throughput import make_photos, save_result  # noqa: E402


def run(source: Path, lake: Path, env: dict, *extra: str) -> dict:
    command = [sys.executable, "-m", "embedlake.flows.cli", "run", str(source), "--lake", str(lake)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--weights", "random", *extra], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        flow, embedded = con.execute(
            "SELECT epoch(finished_at - started_at), n_embedded FROM runs"
        ).fetchone()
    return {"wall_seconds": wall, "flow_seconds": flow, "n_embedded": embedded}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--out", default="bench/results/ray-overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="embedlake-ray-") as tmp:
        work = Path(tmp)
        env = dict(_run_env(work), RAY_AUTH_MODE="disabled")
        make_photos(work / "photos", args.images, (640, 480))
        make_photos(work / "warm", 2, (640, 480))
        run(work / "warm", work / "warm-lake", env)  # measures --precision auto once, cached
        local = run(work / "photos", work / "local", env)
        ray = run(
            work / "photos",
            work / "ray",
            env,
            "--runner",
            "ray",
            "--shard-size",
            str(args.shard_size),
        )
    result = {
        "images": args.images,
        "shard_size": args.shard_size,
        "cpu_count": os.cpu_count(),
        "local": local,
        "ray": ray,
        "wall_ratio_ray_over_local": ray["wall_seconds"] / local["wall_seconds"],
    }
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
