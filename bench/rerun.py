"""Reruns at two collection sizes: what a full run and a small-change rerun cost (not a test).

For N in (--small, --large) distinct small JPEGs, in one process: a full `embedlake run` (peak RSS
of its whole process tree), then `--added` new images and a rerun (wall time; how many files it
read again, from the run's own `runs.n_files_unchanged`). Reported as ratios large/small, which
is what the issue's goals are stated in (the machine is shared, so absolute seconds drift).

    python bench/rerun.py [--small 4000 --large 40000 --added 20 --backbone mobilenet_v1_0.25_128]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import make_photos, save_result  # noqa: E402
from tree_rss import run_embedlake  # noqa: E402


def _counts(lake: Path) -> dict:
    import duckdb

    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        names = ["n_files", "n_files_new", "n_files_changed", "n_files_unchanged", "n_embedded"]
        row = con.execute(
            f"SELECT {', '.join(names)} FROM runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    return dict(zip(names, row, strict=True))


def measure(work: Path, n: int, added: int, env: dict, extra: tuple[str, ...]) -> dict:
    source, lake = work / f"photos-{n}", work / f"lake-{n}"
    make_photos(source, n, (64, 48))
    print(f"  full run, {n} images ...", flush=True)
    full = run_embedlake(source, lake, env, extra)
    make_photos(work / f"added-{n}", added, (64, 48))  # other seeds: other crops
    for path in sorted((work / f"added-{n}").iterdir()):
        path.rename(source / f"added_{path.name}")
    print(f"  rerun after adding {added} ...", flush=True)
    rerun = run_embedlake(source, lake, env, extra)
    return {"full": full, "rerun": rerun, "rerun_counts": _counts(lake)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=4000)
    parser.add_argument("--large", type=int, default=40000)
    parser.add_argument("--added", type=int, default=20)
    parser.add_argument("--backbone", default="mobilenet_v1_0.25_128")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    extra = ("--backbone", args.backbone)
    results: dict = {"started_at": datetime.now(UTC).isoformat(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="embedlake-rerun-") as tmp:
        work = Path(tmp)
        env["PREFECT_HOME"] = str(work / "prefect")
        env["EMBEDLAKE_CACHE"] = str(work / "cache")
        for n in (args.small, args.large):
            results[str(n)] = measure(work, n, args.added, env, extra)
    small, large = results[str(args.small)], results[str(args.large)]
    results["ratios"] = {
        "full_run_peak_rss_large_over_small": large["full"]["peak_rss_mb"]
        / small["full"]["peak_rss_mb"],
        "rerun_wall_large_over_small": large["rerun"]["wall_seconds"]
        / small["rerun"]["wall_seconds"],
    }
    out = Path(args.out) / f"rerun-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    save_result(results, out)
    rows = [
        ("", f"{args.small:,}", f"{args.large:,}", "ratio"),
        (
            "full run: peak RSS (MiB, process tree)",
            f"{small['full']['peak_rss_mb']:.0f}",
            f"{large['full']['peak_rss_mb']:.0f}",
            f"{results['ratios']['full_run_peak_rss_large_over_small']:.2f}",
        ),
        (
            f"rerun after adding {args.added}: wall (s)",
            f"{small['rerun']['wall_seconds']:.1f}",
            f"{large['rerun']['wall_seconds']:.1f}",
            f"{results['ratios']['rerun_wall_large_over_small']:.2f}",
        ),
        (
            "  files read again / unchanged (not read)",
            f"{small['rerun_counts']['n_files_new'] + small['rerun_counts']['n_files_changed']}"
            f" / {small['rerun_counts']['n_files_unchanged']}",
            f"{large['rerun_counts']['n_files_new'] + large['rerun_counts']['n_files_changed']}"
            f" / {large['rerun_counts']['n_files_unchanged']}",
            "",
        ),
    ]
    for row in rows:
        print(f"{row[0]:<44}{row[1]:>14}{row[2]:>14}{row[3]:>8}")
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
