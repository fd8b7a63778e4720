"""The report's sections over the neighbour graph on a collection of N images (not a test).

The report asks the graph three things whatever the lake holds: the outliers (`outliers`,
8 per backbone), the near-duplicate pairs (`near_duplicates`, cosine >= 0.95) and the two
backbones' agreement on a sample (`backbone_agreement`, 50,000 images). Each named query here
runs as the report runs it, through `queries.run_query` on a read connection with DuckDB's
1GB, each in a fresh process (its peak RSS its own, a cold DuckDB), `--repeat` times.

The lake: bench/explore_scale.py's synthetic lake of N `files` rows (one finished run; image i's
id the SHA-256 of i), to which this adds what a run's graph would hold: for two groups
(mobilenet_v1 and xception, weights "synthetic", fp32), every image's list of k = 10 neighbours
written by the graph's own writer (`graph._write_lists`, parts of 65,536 images sorted by
image_id, as an ANN update writes them). The neighbours are random images, the similarities
random and ranked (uniform in 0.2-0.9; one list in 1,000 has its first at 0.97, a pair for
near_duplicates to find, as in a collection with few duplicates): their size is a graph's,
their content is not. Vectors, index and thumbnails are not written (these queries read none
of them).

    python bench/report_graph.py --n 10000000 --lake /tmp/collection10m
    python bench/report_graph.py --n 10000000 --lake /tmp/collection10m --before REV

`--before REV`: the same queries from an earlier commit's code (bench/report_scale.py's git
worktree), alternately with this checkout's. `--report`: then the whole `embedlake report` on
that lake once with this checkout's code (wall time, peak RSS, seconds per section; the lake
has no embeddings or thumbnails, so its sample and galleries are empty).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report_scale import (  # noqa: E402
    MEASURED,
    _report,
    before_code,
    check_code_from,
    child_result,
    this_code,
)
from throughput import save_result  # noqa: E402

K = 10
NEAR_SHARE = 0.001
PART_ROWS = 65_536
GROUPS = (("mobilenet_v1", "synthetic", "fp32"), ("xception", "synthetic", "fp32"))
QUERIES = {  # as tasks/report.py asks them
    "outliers": {"limit": "8"},
    "near_duplicates": {"threshold": "0.95"},
    "backbone_agreement": {"sample": "50000"},
}

_CHILD = """
import json, resource, sys, time
import embedlake.tasks
from embedlake.tasks.catalog import connect_read_only
from embedlake.tasks.queries import run_query
lake, name, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with connect_read_only(lake) as con:
    t = time.perf_counter()
    rows = run_query(con, name, params).num_rows
    seconds = time.perf_counter() - t
    spilled = con.execute("SELECT sum(temporary_storage_bytes) FROM duckdb_memory()").fetchone()[0]
print("CODE_FROM", embedlake.tasks.__file__, file=sys.stderr)
print()
print("RESULT", json.dumps({"seconds": round(seconds, 2), "rows": rows,
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "spilled_mb_at_end": round((spilled or 0) / 2**20)}))
"""


def write_graph(lake: Path, n: int) -> dict:
    """Every image's synthetic list, both groups (see the module's docstring)."""
    from explore_scale import _ids

    from embedlake.tasks import graph
    from embedlake.tasks import lake as lakes

    started = time.perf_counter()
    root = lakes.Lake.at(lake)
    ids = np.asarray(_ids(0, n), object)
    rng = np.random.default_rng(7)
    for key in GROUPS:
        for p0 in range(0, n, PART_ROWS):
            rows = min(PART_ROWS, n - p0)
            picks = (p0 + rng.integers(1, n, (rows, K))) % n  # never the image itself
            sims = -np.sort(-rng.uniform(0.2, 0.9, (rows, K)).astype(np.float32), axis=1)
            sims[rng.random(rows) < NEAR_SHARE, 0] = 0.97  # a near-duplicate first neighbour
            lists = graph.Lists(ids[p0 : p0 + rows], ids[picks], sims)
            graph._write_lists(root, lakes.GroupKey(*key), lists, "synthetic")
    from embedlake.tasks.catalog import build_catalog

    build_catalog(lake)
    return {"lists": n * len(GROUPS), "seconds": round(time.perf_counter() - started, 1)}


def _query(lake: Path, name: str, pythonpath: str | None) -> dict:
    args = [str(lake), name, json.dumps(QUERIES[name])]
    return child_result(_CHILD, args, pythonpath, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--lake", required=True, type=Path, help="explore_scale's lake folder")
    parser.add_argument("--before", help="an earlier commit to compare with")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="then the whole report, once")
    parser.add_argument("--out", help="default: bench/measured/report-graph-<n>.json")
    args = parser.parse_args()
    lake = args.lake.resolve() / "lake"
    made = None
    if not (lake / "catalog.duckdb").exists():
        from explore_scale import write_lake

        made = {"files": write_lake(lake, args.n)}
    if not any(p.name.startswith("xception-") for p in (lake / "neighbors").iterdir()):
        made = {**(made or {}), "graph": write_graph(lake, args.n)}
    codes = {"after": None}
    runs: dict[str, dict[str, list[dict]]] = {}
    load = {"start": os.getloadavg()}
    with before_code(args.before) if args.before else contextlib.nullcontext() as shim:
        if shim:
            codes = {"before": shim, "after": None}
        for i in range(args.repeat):
            for name in QUERIES:
                for which, path in codes.items():
                    print(f"{name} {which} {i + 1}/{args.repeat} ...", flush=True)
                    runs.setdefault(name, {}).setdefault(which, []).append(_query(lake, name, path))
    report = _report(lake, None) if args.report else None
    load["end"] = os.getloadavg()
    if shim:
        for by_code in runs.values():
            check_code_from(by_code, shim)
    best = {
        name: {which: min(r["seconds"] for r in rs) for which, rs in by_code.items()}
        for name, by_code in runs.items()
    }
    result = {
        "what": "the report's queries over the graph, each in a fresh process with DuckDB's "
        "1GB, on a synthetic lake of N images' files and lists; see bench/report_graph.py",
        "command": "python bench/report_graph.py " + " ".join(sys.argv[1:]),
        "n": args.n,
        "lake": str(lake),
        "made": made,
        "before": args.before,
        "after": this_code(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": load,
        "runs": runs,
        "best_seconds": best,
        "total_best_seconds": {
            which: round(sum(b[which] for b in best.values()), 2) for which in codes
        },
        "report": report,
    }
    out = Path(args.out) if args.out else MEASURED / f"report-graph-{args.n}.json"
    save_result(result, out)
    for name, b in best.items():
        print(f"{name:20s}", "  ".join(f"{w} {s:7.2f} s" for w, s in b.items()))
    print("total", result["total_best_seconds"], out)
    if report:
        print("report", report["wall_seconds"], "s,", report["peak_rss_mb"], "MB peak RSS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
