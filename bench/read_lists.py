"""An update's read of the existing lists it enters (`graph.read_lists(..., only=...)`), this
checkout's code against an earlier commit's, alternated, on one lake.

`--lists` image ids are drawn (seeded) from the group's embedded images, as an update's new
images enter ~10 existing lists each; each read runs in a fresh process, the earlier commit's
code imported from a git worktree of it (bench/report_scale.py's `before_code`). Both reads
must give the same lists (a digest of them is compared).

    python bench/read_lists.py --lake /work/tmp/scale10m --before bed8ce4 [--lists 96000]

Results: bench/measured/read-lists-<lists>.json and a line per read on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report_scale import before_code, check_code_from, short_commit, this_code  # noqa: E402

_CHILD = """
import hashlib, json, sys, time
import pyarrow as pa
from embedlake.tasks import graph, lake
root = lake.Lake.at(sys.argv[1])
key = lake.GroupKey(*json.loads(sys.argv[2]))
only = pa.array(open(sys.argv[3]).read().split(), pa.string())
started = time.perf_counter()
lists = graph.read_lists(root, key, 10, only=only)
seconds = time.perf_counter() - started
digest = hashlib.sha256(repr((lists.ids.tolist(), lists.neighbors.tolist(),
                              lists.sims.tolist())).encode()).hexdigest()
print(json.dumps({"seconds": round(seconds, 2), "lists": len(lists.ids), "digest": digest,
                  "code_from": graph.__file__}))
"""


def _read(lake_dir: str, key: list[str], ids_file: str, pythonpath: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, lake_dir, json.dumps(key), ids_file],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--before", required=True, help="the earlier commit to compare with")
    parser.add_argument("--lists", type=int, default=96_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()

    from embedlake.tasks import graph, lake

    root = lake.Lake.at(args.lake)
    keys = graph.group_keys(root)
    if not keys:
        raise SystemExit(f"{args.lake}: no embedded group")
    key = keys[0]
    ids = graph.group_ids(root, key).to_numpy(zero_copy_only=False)
    wanted = np.random.default_rng(0).choice(ids, min(args.lists, len(ids)), replace=False)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with (
        tempfile.NamedTemporaryFile("w", suffix=".txt") as ids_file,
        before_code(args.before) as shim,
    ):
        ids_file.write("\n".join(wanted.tolist()))
        ids_file.flush()
        for _ in range(args.repeats):
            for code, pythonpath in (("before", shim), ("after", None)):
                run = _read(args.lake, list(key), ids_file.name, pythonpath)
                runs[code].append(run)
                print(f"{code}: {run['seconds']} s, {run['lists']} lists", flush=True)
        check_code_from(runs, shim)
    digests = {r["digest"] for code in runs.values() for r in code}
    if len(digests) != 1:
        raise RuntimeError("the two codes read different lists")
    best = {code: min(r["seconds"] for r in found) for code, found in runs.items()}
    result = {
        "what": "graph.read_lists of --lists drawn images, each read in a fresh process",
        "command": "python " + " ".join(sys.argv),
        "when": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "lake": args.lake,
        "group": list(key),
        "before": short_commit(args.before),
        "after": this_code(),
        "lists_wanted": len(wanted),
        "lists_read": runs["after"][0]["lists"],
        "runs": runs,
        "best_s": best,
        "speedup": round(best["before"] / best["after"], 2),
    }
    out = Path(args.out or HERE / "measured" / f"read-lists-{len(wanted)}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"best {best['before']} -> {best['after']} s (x{result['speedup']}); written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
