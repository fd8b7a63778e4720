"""The lake at scale: synthetic unit vectors through the product's writer, graph and catalog.

One group (backbone mobilenet_v1, N x DIM clustered unit vectors, ids sha256 hex like a run's),
written as a run writes them (`lake.embeddings_table`, float16 by default, parts of 65,536 rows
sorted by image_id, `Lake.write_part`). Then, each stage in a fresh child process so that its
peak RSS is its own:
- the base graph: `--base reindex` runs the product's full reindex (index and every image's
  list). `--base index` builds the ANN index alone (the reindex's first half, the same code), for
  sizes where N searches do not fit the session: the base images then have no lists;
  With `--base index`, the base images get random lists of the real size (`synthetic_lists`),
  so updates read and merge a graph of N lists; recall is then measured on the added images;
- graph updates after adding new images (`--adds`, default +0.1 % and +1 %), through the
  product's incremental update (`build_neighbor_graph`);
- `embedlake nearest` latency for one image (fresh process, index segments mapped from disk),
  the catalog's exact `nearest` macro (small N only), `count(*)` on `embeddings`;
- lake bytes, and recall@10 of the updated images' lists against an exact scan.

    python bench/scale.py --n 1000000 [--dim 1024 --base reindex|index --adds 1000,10000]
    python bench/scale.py --n N --out JSON --again update:10000 [--before REV]

`--again` re-measures on the lake of an earlier run (its JSON names it); `update:M` adds M more
images and updates the graph, with `--before REV` twice: REV's code, then this checkout's.

Results: bench/measured/scale-<n>.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_scale import before_code, check_code_from, short_commit, this_code  # noqa: E402

BACKBONE, WEIGHTS, PRECISION = "mobilenet_v1", "synthetic", "fp32"
PART_ROWS = 65_536
CENTRES = 1000


def _vectors(first: int, n: int, dim: int) -> np.ndarray:
    """Rows first .. first + n of the synthetic collection (each part seeded on its own)."""
    centres = np.random.default_rng(0).normal(size=(CENTRES, dim)).astype(np.float32)
    rng = np.random.default_rng(first + 1)
    x = centres[rng.integers(0, CENTRES, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ids(first: int, n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(first, first + n)]


def stage_write(lake_dir: str, first: int, n: int, dim: int, run: str, storage: str) -> dict:
    from embedlake.tasks import lake

    root = lake.Lake.at(lake_dir).ensure()
    for p0 in range(first, first + n, PART_ROWS):
        rows = min(PART_ROWS, first + n - p0)
        table = lake.embeddings_table(
            image_ids=_ids(p0, rows),
            backbone=BACKBONE,
            weights_id=WEIGHTS,
            precision=PRECISION,
            vectors=_vectors(p0, rows, dim),
            norms=np.ones(rows, np.float32),
            run_id=run,
            storage=storage,
        )
        # as lake.PartWriter writes a run's parts: sorted by image_id
        root.write_part(table.sort_by("image_id"), "embeddings", f"{run}-{p0:012d}.parquet")
    return {}


def stage_index(lake_dir: str) -> dict:
    """The ANN index of the whole group, no lists: `update_group`'s first half, its own code."""
    from embedlake.tasks import graph, lake

    root = lake.Lake.at(lake_dir)
    key = lake.GroupKey(BACKBONE, WEIGHTS, PRECISION)
    started = time.perf_counter()
    index = graph._new_index(root, key, graph.group_size(root, key))
    trained = time.perf_counter()
    parts = graph.embedding_part_names(root)
    index.add(graph.iter_group_blocks(root, key, parts=parts, block_rows=65_536), parts)
    index.commit()
    return {
        "train_s": round(trained - started, 1),
        "add_s": round(time.perf_counter() - trained, 1),
        "nlist": index.manifest.nlist,
        "segments": len(index.manifest.segments),
    }


def stage_graph(lake_dir: str, rebuild: bool, ann_threshold: int) -> dict:
    from embedlake.tasks.neighbors import build_neighbor_graph

    written = build_neighbor_graph(lake_dir, k=10, ann_threshold=ann_threshold, rebuild=rebuild)
    code_from = str(Path(sys.modules[build_neighbor_graph.__module__].__file__).resolve().parent)
    return {"lists_written": sum(written.values()), "code_from": code_from}


def stage_catalog(lake_dir: str) -> dict:
    from embedlake.tasks.catalog import build_catalog

    build_catalog(lake_dir)
    return {}


def stage_synthetic_lists(lake_dir: str, n: int) -> dict:
    """Lists for the base images when `--base index` skipped their search: random neighbours
    among the base images, k = 10, written through the graph's own writer. Their content is
    not a graph; their size is, so an update reads and merges lists at the real scale."""
    from embedlake.tasks import graph, lake

    root = lake.Lake.at(lake_dir)
    key = lake.GroupKey(BACKBONE, WEIGHTS, PRECISION)
    rng = np.random.default_rng(3)
    for p0 in range(0, n, PART_ROWS):
        rows = min(PART_ROWS, n - p0)
        ids = np.asarray(_ids(p0, rows), object)
        picks = rng.integers(0, n, rows * 10)
        neighbors = np.asarray([_ids(int(i), 1)[0] for i in picks], object).reshape(rows, 10)
        sims = -np.sort(-rng.uniform(0.2, 0.9, (rows, 10)).astype(np.float32), axis=1)
        graph._write_lists(root, key, graph.Lists(ids, neighbors, sims), "synthetic")
    return {"lists": n}


def stage_queries(lake_dir: str, n: int, macro: bool, repeats: int = 3) -> dict:
    from embedlake.tasks.catalog import connect_read_only

    out: dict = {}
    query_id = _ids(n - 1, 1)[0]  # one of the images added last: it has a list
    statements = [
        ("count_s", "SELECT count(*) FROM embeddings", []),
        ("neighbors_view_one_image_s", "SELECT * FROM neighbors WHERE image_id = ?", [query_id]),
    ]
    if macro:
        statements.append(
            ("nearest_macro_s", "SELECT * FROM nearest(?, ?, 10)", [query_id, BACKBONE])
        )
    with connect_read_only(lake_dir, memory_limit="4GB") as con:
        for label, sql, params in statements:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                con.execute(sql, params).fetchall()
                times.append(time.perf_counter() - started)
            out[label] = round(min(times), 3)
            out[label.replace("_s", "_first_s")] = round(times[0], 3)
    return out


def stage_nearest_cli(lake_dir: str, n: int) -> dict:
    """`embedlake nearest` for one image, as a user runs it: a fresh process, timed whole."""
    query_id = _ids(n // 3, 1)[0]
    command = [
        sys.executable,
        "-m",
        "embedlake.flows.cli",
        "nearest",
        query_id,
        "--backbone",
        BACKBONE,
        "--lake",
        lake_dir,
        "--format",
        "csv",
    ]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
    from embedlake.tasks.nearest import nearest

    calls = []
    for _ in range(2):  # the first call imports faiss; the second is a session's next query
        started = time.perf_counter()
        table = nearest(lake_dir, query_id, BACKBONE, 10)
        calls.append(time.perf_counter() - started)
    return {
        "process_s": round(min(times), 3),
        "process_first_s": round(times[0], 3),
        "call_first_s": round(calls[0], 3),
        "call_s": round(calls[1], 3),
        "method": table.column("method")[0].as_py(),
        "rows": len(out.stdout.splitlines()) - 1,
    }


def stage_recall(lake_dir: str, lo: int, hi: int, sample: int, nprobes: tuple = ()) -> dict:
    """Lists of `sample` images among rows lo..hi against their exact top-10 (a blocked scan of
    every vector); with `nprobes`, the same images searched through the index at each nprobe too,
    against the same exact scan (what probing fewer lists costs the lists an update writes)."""
    import pyarrow as pa

    from embedlake.tasks import graph, lake

    root = lake.Lake.at(lake_dir)
    key = lake.GroupKey(BACKBONE, WEIGHTS, PRECISION)
    picks = np.random.default_rng(2).choice(np.arange(lo, hi), min(sample, hi - lo), replace=False)
    query_ids = [_ids(int(p), 1)[0] for p in picks]
    wanted = pa.array(query_ids, pa.string())
    found = {
        i: v
        for ids, vecs in graph.iter_group_blocks(root, key, only=wanted)
        for i, v in zip(ids, vecs, strict=True)
    }
    queries = np.stack([found[i] for i in query_ids])
    _, best_i = _exact_top10(root, key, queries, query_ids)
    lists = graph.read_lists(root, key, 10, only=wanted)
    got = dict(zip(lists.ids, lists.neighbors, strict=True))
    hits = [len(set(got.get(q, [])) & set(best_i[r])) / 10 for r, q in enumerate(query_ids)]
    out = {"recall_at_10": round(float(np.mean(hits)), 4), "sample": len(picks)}
    if nprobes:
        out["index_by_nprobe"] = _by_nprobe(root, key, queries, query_ids, best_i, nprobes)
    return out


def stage_nprobe(lake_dir: str, total: int, sample: int) -> dict:
    """Recall@10 and search time of `sample` stored images through the index at several nprobe
    (what limits recall: the lists probed, or the 8-bit codes)."""
    import pyarrow as pa

    from embedlake.tasks import graph, lake

    root = lake.Lake.at(lake_dir)
    key = lake.GroupKey(BACKBONE, WEIGHTS, PRECISION)
    picks = np.random.default_rng(5).choice(total, sample, replace=False)
    query_ids = [_ids(int(p), 1)[0] for p in picks]
    found = {
        i: v
        for ids, vecs in graph.iter_group_blocks(root, key, only=pa.array(query_ids))
        for i, v in zip(ids, vecs, strict=True)
    }
    queries = np.stack([found[i] for i in query_ids])
    _, truth = _exact_top10(root, key, queries, query_ids)
    return {"sample": sample} | _by_nprobe(root, key, queries, query_ids, truth, (16, 32, 64, 128))


def _by_nprobe(root, key, queries, query_ids, truth, nprobes) -> dict:
    """Recall@10 (the query itself left out) and search time of `queries` through the group's
    index at each nprobe."""
    from embedlake.tasks import graph

    index = graph.open_index(root, key)
    out = {}
    for nprobe in nprobes:
        index.nprobe = nprobe
        started = time.perf_counter()
        _, ids = index.search(queries, 11)
        seconds = time.perf_counter() - started
        hits = [len((set(ids[r]) - {q}) & set(truth[r])) / 10 for r, q in enumerate(query_ids)]
        out[f"nprobe_{nprobe}"] = {
            "recall_at_10": round(float(np.mean(hits)), 4),
            "ms_per_query": round(seconds / len(query_ids) * 1000, 2),
        }
    return out


def _exact_top10(root, key, queries: np.ndarray, query_ids: list[str]):
    """(similarities, image_ids) of each query's exact top-10: a blocked scan of every vector."""
    from embedlake.tasks import graph, topk

    blocks = graph.iter_group_blocks(root, key, block_rows=65_536)
    best_i, best_s = topk.top_k(queries, blocks, 10, query_ids=query_ids)
    return best_s, best_i


STAGES = {
    "write": stage_write,
    "graph": stage_graph,
    "catalog": stage_catalog,
    "queries": stage_queries,
    "index": stage_index,
    "synthetic_lists": stage_synthetic_lists,
    "nearest_cli": stage_nearest_cli,
    "nprobe": stage_nprobe,
    "recall": stage_recall,
    "recall_last": stage_recall,
}
NPROBES = (8, 12, 16, 24, 32)


def _child(name: str, *args, pythonpath: str | None = None) -> dict:
    """Run one stage in a fresh interpreter: its seconds and its own peak RSS (`pythonpath`:
    where `embedlake` is imported from, an earlier commit's code)."""
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--stage", name, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"  {name}{list(args)[1:]}: {result}", flush=True)
    return result


def _lake_bytes(lake_dir: str) -> dict:
    sizes = {}
    for folder in Path(lake_dir).iterdir():
        if folder.is_dir():
            sizes[folder.name] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return sizes


def _again(out: Path, names: list[str], before: str | None) -> int:
    """Re-run read-only stages on the lake an earlier run left; the JSON keeps both. With
    `before`, each update runs twice, the earlier commit's code first, then this checkout's,
    each on its own new images (the second on a lake larger by M)."""
    with before_code(before) if before else contextlib.nullcontext() as shim:
        return _again_with(out, names, before, shim)


def _again_with(out: Path, names: list[str], before: str | None, shim: str | None) -> int:
    result = json.loads(out.read_text())
    stages, lake_dir = result["stages"], result["lake"]
    total = result["n"] + sum(s.get("images_added", 0) for s in stages.values())
    lo = 0 if result["base"] == "reindex" else result["n"]
    for name in names:
        if name.startswith("update:"):  # another update of m images, on the final code
            m = int(name.split(":")[1])
            codes = [(this_code(), None)]
            if shim:  # the earlier commit's code first
                codes.insert(0, (short_commit(str(before)), shim))
            by_code: dict[str, list[dict]] = {"before": [], "after": []}
            for code, pythonpath in codes:
                run = f"again{m}-{len(stages)}"
                stages[f"write_{run}"] = _child(
                    "write", lake_dir, total, m, result["dim"], run, result["storage"]
                )
                update = _child(
                    "graph", lake_dir, False, result["ann_threshold"], pythonpath=pythonpath
                )
                update.update(images_added=m, code=code, command="python " + " ".join(sys.argv))
                update["measured_at"] = datetime.now(UTC).isoformat()
                by_code["before" if pythonpath else "after"].append(update)
                stages[f"update_{run}"] = update
                total += m
            if shim:
                check_code_from(by_code, shim)
            continue
        if name == "recall_last":  # the latest update's images: their lists, the index by nprobe
            last = [s for s in stages.values() if "images_added" in s][-1]["images_added"]
            args = (lake_dir, total - last, total, 1000, NPROBES)
        else:
            args = {
                "queries": (lake_dir, total, total <= 1_000_000),
                "nearest_cli": (lake_dir, total),
                "recall": (lake_dir, lo, total, result["stages"]["recall"]["sample"]),
                "nprobe": (lake_dir, total, 100),
            }[name]
        if name in stages:
            stages.setdefault("superseded", {})[name] = stages[name]
        stages[name] = _child(name, *args)
        stages[name]["measured_again_at"] = datetime.now(UTC).isoformat()
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--storage", default="float16", choices=["float16", "float32"])
    parser.add_argument("--base", default="reindex", choices=["reindex", "index"])
    parser.add_argument(
        "--adds",
        default="",
        help="images per update, comma-separated (default: 0.1 %% and 1 %% of --n)",
    )
    parser.add_argument("--ann-threshold", type=int, default=200_000)
    parser.add_argument("--recall-sample", type=int, default=200)
    parser.add_argument("--lake", help="default: a temporary folder under /work/tmp")
    parser.add_argument("--out", help="default: bench/measured/scale-<N>.json")
    parser.add_argument(
        "--again",
        default="",
        help="re-measure stages (queries, nearest_cli, recall, nprobe, recall_last; update:M "
        "adds M images "
        "and updates the graph) on the lake of an earlier run of this size, and update its JSON",
    )
    parser.add_argument(
        "--before",
        help="with --again update:M: run each update on this earlier commit's code too, first",
    )
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = STAGES[args.stage](*json.loads(args.args))
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(result))
        return 0

    n, dim = args.n, args.dim
    out = Path(args.out or f"bench/measured/scale-{n}.json")
    if args.again:
        return _again(out, args.again.split(","), args.before)
    lake_dir = args.lake or tempfile.mkdtemp(prefix="scale-", dir="/work/tmp")
    adds = [int(a) for a in args.adds.split(",")] if args.adds else [n // 1000, n // 100]
    result: dict = {
        "n": n,
        "dim": dim,
        "storage": args.storage,
        "base": args.base,
        "ann_threshold": args.ann_threshold,
        "lake": lake_dir,
        "started_at": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "command": "python " + " ".join(sys.argv),
        "stages": {},
    }
    stages = result["stages"]
    stages["write"] = _child("write", lake_dir, 0, n, dim, "base", args.storage)
    if args.base == "reindex":
        stages["reindex"] = _child("graph", lake_dir, True, args.ann_threshold)
    else:
        stages["index"] = _child("index", lake_dir)
        stages["synthetic_lists"] = _child("synthetic_lists", lake_dir, n)
    total = n
    for m in adds:
        stages[f"write_add_{m}"] = _child("write", lake_dir, total, m, dim, f"add{m}", args.storage)
        stages[f"update_add_{m}"] = _child("graph", lake_dir, False, args.ann_threshold)
        stages[f"update_add_{m}"]["images_added"] = m
        total += m
    stages["catalog"] = _child("catalog", lake_dir)
    stages["queries"] = _child("queries", lake_dir, total, total <= 1_000_000)
    stages["nearest_cli"] = _child("nearest_cli", lake_dir, total)
    lo = 0 if args.base == "reindex" else n  # images that have lists
    stages["recall"] = _child("recall", lake_dir, lo, total, args.recall_sample)
    if args.base == "index":  # the stored images as a reindex would search them
        stages["nprobe"] = _child("nprobe", lake_dir, total, args.recall_sample)
    result["lake_bytes"] = _lake_bytes(lake_dir)
    result["finished_at"] = datetime.now(UTC).isoformat()
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'stage':<20}{'seconds':>10}{'peak RSS MiB':>14}")
    for name, stage in stages.items():
        print(f"{name:<20}{stage['seconds']:>10}{stage['peak_rss_mib']:>14}")
    print("queries:", stages["queries"])
    print("nearest (CLI):", stages["nearest_cli"])
    print("recall@10:", stages["recall"]["recall_at_10"])
    print("lake bytes:", result["lake_bytes"])
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
