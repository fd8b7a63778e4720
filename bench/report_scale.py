"""`embedlake report` on a large lake: this checkout against an earlier commit (not a test).

Both report the same lake's latest run, alternately, `--repeat` times each, in one session of
this script, so the ratio between them is measured under the same load. The earlier commit's
code runs from a git worktree of it (removed afterwards), put first on PYTHONPATH; each child
prints the file its `embedlake.tasks` came from, which the bench checks. Per report: the wall
time of the command, its peak RSS (the process's own high-water mark), and what each section
took (its summary.json's `section_seconds`).

The lake: one a `python bench/scale_run.py --n N --keep` run left (/tmp/scale_run/n<N>/lake;
what is synthetic in it is said there). A report writes only under LAKE/reports.

    python bench/report_scale.py --lake /tmp/scale_run/n1000000/lake --before e8aa650

`--collection N` measures one part of it where no lake of N images fits this disk: the report's
queries over the collection (cameras, byte-identical duplicates, the outliers' and agreement's
paths), each resolving the `images` view as before against one temporary table read once, on
bench/explore_scale.py's synthetic lake (N `files` rows of one finished run; no images, no
embeddings, no graph), each way in a fresh process with DuckDB's 1GB read connection:

    python bench/report_scale.py --collection 10000000 --lake /tmp/collection10m
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MEASURED = HERE / "measured"
sys.path.insert(0, str(HERE))

from throughput import save_result  # noqa: E402

# runs the CLI in this process, then reports where the code came from and the peak RSS
_CHILD = """
import resource, runpy, sys
import embedlake.tasks
sys.argv = ["embedlake", *sys.argv[1:]]
try:
    runpy.run_module("embedlake.flows.cli", run_name="__main__")
    code = 0
except SystemExit as exc:
    code = exc.code
print("CODE_FROM", embedlake.tasks.__file__, file=sys.stderr)
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def child_result(code: str, args: list[str], pythonpath: str | None, what: str) -> dict:
    """Run `code` in a fresh Python with `args` (the earlier commit's code first on PYTHONPATH
    where given): the JSON it printed after "RESULT ", and where its embedlake came from (its
    "CODE_FROM" line on stderr)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if done.returncode:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    (origin,) = [x for x in done.stderr.splitlines() if x.startswith("CODE_FROM ")]
    # (DuckDB's progress bar shares stdout)
    result = json.loads(done.stdout.rsplit("RESULT ", 1)[1])
    return {**result, "code_from": origin.split(" ", 1)[1]}


def _shim(worktree: Path, folder: Path) -> Path:
    """A folder holding an `embedlake` package whose parts are the worktree's folders."""
    package = folder / "embedlake"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for part in ("flows", "tasks", "sql", "data"):
        (package / part).symlink_to(worktree / part, target_is_directory=True)
    return folder


def _report(lake: Path, pythonpath: str | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "report", "--lake", str(lake)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"the report failed: {done.stderr[-2000:]}")
    lines = dict(
        line.split(" ", 1) for line in done.stderr.splitlines() if line.startswith(("CODE_", "MAX"))
    )
    summary = json.loads((lake / "reports" / "latest" / "summary.json").read_text())
    return {
        "wall_seconds": round(wall, 2),
        "peak_rss_mb": round(int(lines["MAXRSS_KB"]) / 1024),
        "code_from": lines["CODE_FROM"],
        "section_seconds": summary["section_seconds"],
    }


_COLLECTION_QUERIES = {  # what the report asks of the collection, by the named queries' SQL
    "exif_summary": "SELECT count(*) FROM ({exif_summary})",
    "duplicates": "SELECT count(*) FROM ({duplicates})",
    "image_paths": "SELECT count(*) FROM image_paths",
    "agreement_sample": "SELECT count(*) FROM (SELECT DISTINCT image_id FROM images "
    "ORDER BY image_id LIMIT 50000)",
}

_COLLECTION_CHILD = """
import json, resource, sys, time
from embedlake.tasks.catalog import connect_read_only
from embedlake.tasks.queries import load_query
lake, once, queries = sys.argv[1], sys.argv[2] == "once", json.loads(sys.argv[3])
params = {"$limit": "20", "$min_copies": "2"}
texts = {}
for n in ("exif_summary", "duplicates"):
    texts[n] = load_query(n).sql.strip().rstrip(";")
    for k, v in params.items():
        texts[n] = texts[n].replace(k, v)
seconds = {}
with connect_read_only(lake) as con:
    if once:
        t = time.perf_counter()
        con.execute("CREATE TEMP TABLE images AS SELECT * FROM images")
        seconds["read_once"] = round(time.perf_counter() - t, 2)
    for name, sql in queries.items():
        t = time.perf_counter()
        con.execute(sql.format(**texts)).fetchall()
        seconds[name] = round(time.perf_counter() - t, 2)
    spilled = con.execute(
        "SELECT sum(temporary_storage_bytes) FROM duckdb_memory()").fetchone()[0]
print()
print("RESULT", json.dumps({"seconds": seconds, "total_seconds": round(sum(seconds.values()), 2),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "spilled_mb_at_end": round((spilled or 0) / 2**20)}))
"""


def collection(n: int, folder: Path) -> dict:
    """The collection's queries per query against read once, on a synthetic lake of N files."""
    from explore_scale import write_lake

    lake = folder / "lake"
    made = None
    if not (lake / "catalog.duckdb").exists():
        made = write_lake(lake, n)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    ways = {}
    for way in ("per_query", "once"):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _COLLECTION_CHILD,
                str(lake),
                way,
                json.dumps(_COLLECTION_QUERIES),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        # (DuckDB's progress bar shares stdout)
        ways[way] = json.loads(done.stdout.rsplit("RESULT ", 1)[1])
    return {
        "what": "the report's queries over the collection, each resolving the images view "
        "(per_query, as before) against one temporary table read once (once, as now), on "
        "bench/explore_scale.py's synthetic lake: N files rows of one run, nothing else; "
        "see bench/report_scale.py",
        "command": "python bench/report_scale.py " + " ".join(sys.argv[1:]),
        "n": n,
        "queries": _COLLECTION_QUERIES,
        "write_lake": made,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "ways": ways,
        "speedup": round(ways["per_query"]["total_seconds"] / ways["once"]["total_seconds"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--before", help="the earlier commit to compare with")
    parser.add_argument("--collection", type=int, help="N: the collection's queries alone")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", help="default: bench/measured/report-scale-<images>.json")
    args = parser.parse_args()
    if args.collection:
        result = collection(args.collection, args.lake)
        out = Path(args.out or MEASURED / f"report-collection-{args.collection}.json")
        save_result(result, out)
        print(json.dumps(result["ways"], indent=2), f"x{result['speedup']}", out)
        return 0
    if not args.before:
        parser.error("--before is needed (or --collection N)")
    lake = args.lake.resolve()
    with before_code(args.before) as shim:
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        load = {"start": os.getloadavg()}
        for i in range(args.repeat):
            for which, path in (("before", shim), ("after", None)):
                print(f"{which} {i + 1}/{args.repeat} ...", flush=True)
                runs[which].append(_report(lake, path))
        load["end"] = os.getloadavg()
    check_code_from(runs, shim)
    best = {k: min(r["wall_seconds"] for r in v) for k, v in runs.items()}
    sections = sorted({s for v in runs.values() for r in v for s in r["section_seconds"]})
    by_section = {
        s: {
            k: statistics.median(r["section_seconds"].get(s, 0.0) for r in v)
            for k, v in runs.items()
        }
        for s in sections
    }
    with _catalog(lake) as con:
        images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    result = {
        "what": "embedlake report on one lake, an earlier commit's code against this checkout's, "
        "alternately; see bench/report_scale.py",
        "command": "python bench/report_scale.py " + " ".join(sys.argv[1:]),
        "lake": str(lake),
        "images": images,
        "before": args.before,
        "after": this_code(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": load,
        "runs": runs,
        "best_wall_seconds": best,
        "speedup_best_wall": round(best["before"] / best["after"], 2),
        "peak_rss_mb_max": {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()},
        "median_section_seconds": by_section,
    }
    out = Path(args.out) if args.out else MEASURED / f"report-scale-{images}.json"
    save_result(result, out)
    for s, v in by_section.items():
        print(f"{s:18s} {v['before']:7.2f} -> {v['after']:7.2f}")
    ratio = result["speedup_best_wall"]
    print(f"best wall {best['before']} -> {best['after']} s (x{ratio}); {out}")
    return 0


@contextlib.contextmanager
def before_code(rev: str) -> Iterator[str]:
    """A PYTHONPATH under which `embedlake` is the code of commit `rev` (a git worktree of it,
    removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="before-code-") as tmp:
        worktree = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), rev],
            check=True,
            capture_output=True,
        )
        try:
            yield str(_shim(worktree, Path(tmp) / "shim"))
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )


def check_code_from(runs: dict[str, list[dict]], shim: str) -> None:
    """Each child's `code_from` names the code it was meant to run: the earlier commit's for
    "before", this checkout's for "after"."""
    root = str(Path(shim).parent)
    if not all(r["code_from"].startswith(root) for r in runs["before"]) or any(
        r["code_from"].startswith(root) for r in runs["after"]
    ):
        raise RuntimeError(f"the code did not come from where it should: {runs}")


def short_commit(rev: str) -> str:
    """The commit `rev` names, abbreviated (what a result records, not the name given)."""
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def this_code() -> str:
    """This checkout's commit, and whether it has uncommitted changes."""
    return short_commit("HEAD") + (" + uncommitted changes" if _dirty() else "")


def _catalog(lake: Path):
    from embedlake.tasks.catalog import connect_read_only

    return connect_read_only(lake)


def _dirty() -> bool:
    status = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=True,
    )
    return bool(status.stdout.strip())


if __name__ == "__main__":
    raise SystemExit(main())
