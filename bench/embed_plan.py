"""The embed plan's questions to a large lake: this checkout against an earlier commit (not a
test).

What a run asks the lake before it embeds (tasks/steps.py `_plan_embedding`): the precisions
the lake holds for the backbones' weights (`lake.stored_precisions`), then on one read
connection which of the run's images lack an embedding, how many distinct images the run has,
which lack a thumbnail, and the files to decode for those that lack something. Each code
version asks them as its own plan does (the earlier one resolving the run's files once per
question; the checkout through `Inventory.reading(run_images=True)` where it has it), in a
fresh process, alternately, `--repeat` times each; the peak RSS is the child's.

The lake's latest finished run is the one planned; its images all have their embeddings by
then, so the paths are asked for `--wanted` of its images (the most recently recorded first),
as a rerun that adds that many would (both versions ask for the same ids). Nothing is written
to the lake.

    python bench/embed_plan.py --lake /tmp/scale_run/n1000000/lake --before 1698527
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report_scale import (  # noqa: E402
    MEASURED,
    before_code,
    check_code_from,
    child_result,
    this_code,
)
from throughput import save_result  # noqa: E402

_CHILD = """
import inspect, json, resource, sys, time
import embedlake.tasks
from embedlake.tasks import catalog, inventory, lake as lakes
root, wanted_n = lakes.Lake.at(sys.argv[1]), int(sys.argv[2])
with catalog.connect_read_only(root) as con:
    (run_id,), = con.sql("SELECT run_id FROM runs WHERE status = 'finished' "
                         "ORDER BY started_at DESC LIMIT 1").fetchall()
    keys = con.sql("SELECT backbone, any_value(weights_id) FROM embeddings "
                   "GROUP BY 1 ORDER BY 1").fetchall()
    wanted = [i for (i,) in con.sql("SELECT DISTINCT image_id FROM files WHERE run_id = $r "
        "AND status = 'ok' ORDER BY recorded_by DESC, image_id LIMIT $n",
        params={"r": run_id, "n": wanted_n}).fetchall()]
weights_ids = dict(keys)
names = sorted(weights_ids)
seconds = {}
def timed(name, fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds[name] = round(time.perf_counter() - t, 3)
    return out
held = timed("stored_precisions", lakes.stored_precisions, root, weights_ids)
run = inventory.Inventory(run_id, 0.0, {})
once = "run_images" in inspect.signature(run.reading).parameters
t = time.perf_counter()
with run.reading(root, **({"run_images": True} if once else {})) as query:
    seconds["open"] = round(time.perf_counter() - t, 3)
    lacking = timed("lacking_embeddings", query, "lacking_embeddings", backbones=names,
        weights_ids=[weights_ids[n] for n in names], precision=sorted(held)[0])
    n = timed("unique_images", query, "unique_images").column("n")[0].as_py()
    unthumbed = timed("lacking_thumbnails", query, "lacking_thumbnails")
    files = timed("image_files", query, "image_files", image_ids=wanted)
print("CODE_FROM", embedlake.tasks.__file__, file=sys.stderr)
print("RESULT", json.dumps({"seconds": seconds, "total_seconds": round(sum(seconds.values()), 2),
    "run_images_table": once, "peak_rss_mb":
    round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "answers": {"lacking_rows": lacking.num_rows, "images": n, "unthumbed": unthumbed.num_rows,
        "files": files.num_rows, "precisions": sorted(held)}}))
"""


def _plan(lake: Path, wanted: int, pythonpath: str | None) -> dict:
    return child_result(_CHILD, [str(lake), str(wanted)], pythonpath, "the plan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--before", required=True, help="the earlier commit to compare with")
    parser.add_argument("--wanted", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="default: bench/measured/embed-plan-<images>.json")
    args = parser.parse_args()
    lake = args.lake.resolve()
    with before_code(args.before) as shim:
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        load = {"start": os.getloadavg()}
        for i in range(args.repeat):
            for which, path in (("before", shim), ("after", None)):
                print(f"{which} {i + 1}/{args.repeat} ...", flush=True)
                runs[which].append(_plan(lake, args.wanted, path))
        load["end"] = os.getloadavg()
    check_code_from(runs, shim)
    answers = {json.dumps(r["answers"], sort_keys=True) for v in runs.values() for r in v}
    if len(answers) != 1:
        raise RuntimeError(f"the two codes' plans differ: {answers}")
    best = {k: min(r["total_seconds"] for r in v) for k, v in runs.items()}
    steps = sorted({s for v in runs.values() for r in v for s in r["seconds"]})
    result = {
        "what": "the embed plan's questions to one lake, an earlier commit's code against this "
        "checkout's, alternately; see bench/embed_plan.py",
        "command": "python bench/embed_plan.py " + " ".join(sys.argv[1:]),
        "lake": str(lake),
        "answers": json.loads(answers.pop()),
        "before": args.before,
        "after": this_code(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": load,
        "runs": runs,
        "best_total_seconds": best,
        "speedup_best_total": round(best["before"] / best["after"], 2),
        "peak_rss_mb_max": {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()},
        "median_seconds": {
            s: {k: statistics.median(r["seconds"].get(s, 0.0) for r in v) for k, v in runs.items()}
            for s in steps
        },
    }
    images = result["answers"]["images"]
    out = Path(args.out) if args.out else MEASURED / f"embed-plan-{images}.json"
    save_result(result, out)
    for s, v in result["median_seconds"].items():
        print(f"{s:20s} {v['before']:7.2f} -> {v['after']:7.2f}")
    print(f"best total {best['before']} -> {best['after']} s (x{result['speedup_best_total']})")
    print("peak RSS MB", result["peak_rss_mb_max"], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
