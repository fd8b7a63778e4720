"""A real `embedlake run` adding M images to a lake of N, stage by stage (issue 21; not a test).

A lake is built "as a run would leave it" over N existing image files, then M new JPEGs are added
to SOURCE and a real `embedlake run SOURCE --lake LAKE --weights random` (with its report, as a
scheduled run makes it) is timed: each stage's seconds (`runs.stage_seconds`), the wall time, the
peak RSS of its process tree (bench/tree_rss.py), what it embedded, and what it read.

How the lake of N is made:
1. SOURCE gets N real JPEG files, `existing/dNNNN/img_NNNNNNN.jpg` (1,000 per folder). The first
   `--seed-images` (S, default 256) are distinct 48x48 crops of the bundled photos
   (bench/throughput.py's `make_photos`); file i is the bytes of base photo i mod S with a JPEG
   comment segment naming i inserted after the JFIF header, so every file is a valid JPEG with
   its own SHA-256, but the pixels of file i are those of base i mod S.
2. REAL: `embedlake run` over the first S files alone (`--no-report`), which makes a real lake:
   its runs rows, group keys (backbone, weights_id, precision), part names, schemas, files rows,
   embeddings, thumbnails, neighbour graph (exact), CKA and map (fitted on the S).
3. SYNTHETIC: the other N - S files are then written to SOURCE (real files: discovery walks and
   stats them) and the lake's tables are extended as if that same seed run had covered all N:
   - `files`: one row per file, recorded by the seed run, in parts of 4,096 rows named as
     discovery names them (`<run>-<seq>.parquet`): path, size_bytes, mtime and mtime_ns from the
     file's own fstat, image_id its SHA-256; format, width, height, mode, EXIF copied from the seed
     row of the same pixels;
   - `embeddings`, both backbones, float16 (the writer's `lake.embeddings_table`): file i >= S
     belongs to family f = i mod S; its vector is the family's centre (a random unit vector)
     plus Gaussian noise of norm `--noise` (default 0.33) in a fixed random 64-dimensional
     subspace (row i mod 65,537 of a fixed table; see `Families`), renormalised: cosine ~0.90
     within a family, ~0 across families and to the real vectors (which a random-weights model
     puts in a narrow cone: the real images' 10th neighbour is at ~0.996). So the new images'
     lists hold real images, and they enter no synthetic image's list, where in a real
     collection each new image enters ~k existing lists (M x k at most: the rerun's lists
     written under-count by that, see 'written'); and no synthetic pair reaches the report's
     near-duplicate cosine 0.95, as in a collection with few duplicates (with random weights
     every real pair does). `norm` is the family's seed image's. The vectors have nothing to do
     with the files' pixels: the rerun never decodes them. Parts as the run's PartWriter makes
     them: the images sorted by image_id, 2,048 a part (4,096 rows: both backbones), each part
     sorted by image_id;
   - `thumbnails`: the seed run's real thumbnail of the base (JPEG bytes), 4,096 images a part;
   - `neighbors`: for each file i >= S, 10 other synthetic files of its family at distinct
     offsets, with their true cosine similarities (from the synthetic vectors), ranked;
     written by the graph's writer (`graph._write_lists`), one part per group in exact mode (as a
     run's update writes it), one per 65,536 images in ANN mode. When N exceeds the ANN threshold
     (200,000), or with `--ann`, each group's faiss index is built over every embedding part by
     the product's own code (`graph._new_index`, `GroupIndex.add`, `commit`), as the run that
     crossed it would (a group with an index stays in ANN mode);
   - `map`: the seed run's fit part of each group is rewritten holding its own S rows (real) plus
     every other file placed at its base's place plus a small jitter (placed = 'neighbors'),
     since a fit's part holds every image of the collection;
   - `runs`: the seed run's discovered, embedded and finished rows are rewritten with the counts
     of N (n_files, n_files_new, n_ok, n_unique_images, n_embedded);
   - not touched: `agreement` (recomputed by every run), `files_gone`, `metadata`, `reviews`.
4. M new JPEGs (`make_photos`, 96x96, other crops: distinct bytes) go to `SOURCE/new/`.
5. TIMED: `embedlake run SOURCE --lake LAKE --weights random`, with its report. It must embed M
   (n_embedded == M, n_files_unchanged == N): more would mean the synthetic lake was not taken as
   done, and the bench fails.
6. Optional (`--strace`): one more rerun with nothing new, under `strace -f --seccomp-bpf -e
   trace=open,openat`, untimed, counting the opens of files under `SOURCE/existing` (all
   processes: discovery, decode workers, the report).
7. Optional (`--profile HZ`, or `--profile-kept` on a lake a `--keep` run left): one more rerun
   adding 20 images under `py-spy record`, untimed: per stage, the embedlake functions its
   samples fell in (where a stage that grows with N spends its time).

The stages the run's row does not time are worked out from timestamps: `start` (the process
launched -> the run's `started_at`: Python and Prefect starting, the lock), `report` (the finished
row's `finished_at` -> the report's summary.json written), `exit` (-> the process ended).

    python bench/scale_run.py --n 10000 --m 200
    python bench/scale_run.py --n 100000 --m 1000 [--strace] [--keep]
    python bench/scale_run.py --n 100000 --profile-kept      # after a --keep run
    python bench/scale_run.py --n 1000000 --m 1000 --rerun-kept   # another timed rerun on it
    python bench/scale_run.py --compare     # what_grows across every scale-run-*.json

Results: bench/measured/scale-run-<N>.json. Lakes under /tmp/scale_run/ (deleted unless --keep).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from scale import _lake_bytes  # noqa: E402
from throughput import make_photos  # noqa: E402
from tree_rss import run_embedlake  # noqa: E402

WORK = Path("/tmp/scale_run")
MEASURED = Path(__file__).parent / "measured"
PER_FOLDER = 1000
FILES_PART_ROWS = 4096  # discovery's chunk (--part-rows): one files part per chunk
EMBED_PART_IMAGES = 2048  # PartWriter's 4,096 rows: both backbones' rows of 2,048 images
THUMB_PART_IMAGES = 4096
ANN_BLOCK = 65_536  # the ANN update writes a part of lists per block of this many rows
NOISE_DIMS = 64  # the synthetic noise's subspace (Families)
NOISE_ROWS = 65_537  # prime: with S | 256, (i mod S, i mod NOISE_ROWS) is unique below 16 M
K = 10


def rel_path(i: int) -> str:
    return f"existing/d{i // PER_FOLDER:04d}/img_{i:07d}.jpg"


def with_comment(jpeg: bytes, i: int) -> bytes:
    """`jpeg` with a COM segment naming `i` after its JFIF APP0 header: a valid JPEG, its own
    bytes, the same pixels."""
    assert jpeg[:2] == b"\xff\xd8"
    at = 2
    if jpeg[2:4] == b"\xff\xe0":  # keep APP0 (JFIF) right after SOI
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    payload = f"embedlake bench/scale_run.py file {i}".encode()
    segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:at] + segment + jpeg[at:]


def write_files(source: Path, bases: list[bytes], first: int, last: int) -> dict:
    """Files first .. last - 1 under `source`; (image_id, size, mtime_ns) arrays of them."""
    n = last - first
    ids = np.empty(n, object)
    sizes = np.empty(n, np.int64)
    mtimes = np.empty(n, np.int64)
    made = set()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for k, i in enumerate(range(first, last)):
        folder = i // PER_FOLDER
        if folder not in made:
            (source / f"existing/d{folder:04d}").mkdir(parents=True, exist_ok=True)
            made.add(folder)
        data = with_comment(bases[i % len(bases)], i)
        fd = os.open(source / rel_path(i), flags, 0o644)
        try:
            os.write(fd, data)
            info = os.fstat(fd)
        finally:
            os.close(fd)
        ids[k] = hashlib.sha256(data).hexdigest()
        sizes[k], mtimes[k] = info.st_size, info.st_mtime_ns
    return {"ids": ids, "sizes": sizes, "mtimes": mtimes}


# ---------------------------------------------------------------- the synthetic extension


class Families:
    """The synthetic vectors of one group: file i < S keeps the seed run's real vector; file
    i >= S is its family's centre c (a random unit vector per family f = i mod S) plus noise
    P z, renormalised, where P is a fixed orthonormal basis of a random NOISE_DIMS-dimensional
    subspace and z row i mod NOISE_ROWS of a Gaussian table, of norm ~`noise`. Members of one
    family are at cosine about 1 / (1 + noise^2) of each other (0.90 at 0.33), of other families
    about 0. The noise lives in a subspace so that the cosine of two members is exact and cheap:
    (1 + c.Pz_i + c.Pz_j + z_i.z_j) / (|c + Pz_i| |c + Pz_j|), all in NOISE_DIMS dimensions."""

    def __init__(self, real: np.ndarray, noise: float, seed: int):
        self.real = real.astype(np.float32)
        s, dim = real.shape
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((s, dim), np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, NOISE_DIMS)))
        self.basis = basis.astype(np.float32)  # (dim, NOISE_DIMS), orthonormal columns
        self.table = rng.standard_normal((NOISE_ROWS, NOISE_DIMS)).astype(np.float32)
        self.table *= noise / np.sqrt(NOISE_DIMS)
        self.centre_in_basis = self.centres @ self.basis  # (s, NOISE_DIMS)

    def vectors(self, idx: np.ndarray) -> np.ndarray:
        s = len(self.real)
        out = self.centres[idx % s] + self.table[idx % NOISE_ROWS] @ self.basis.T
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        real = idx < s
        out[real] = self.real[idx[real]]
        return out

    def _parts(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = self.table[idx % NOISE_ROWS].astype(np.float64)
        a = np.einsum("nd,nd->n", self.centre_in_basis[idx % len(self.real)], z)
        norm = np.sqrt(1 + 2 * a + np.einsum("nd,nd->n", z, z))
        return z, a, norm

    def member_cosines(self, idx: np.ndarray, nb: np.ndarray) -> np.ndarray:
        """Cosines of files `idx` (n,) with files `nb` (n, K) of their own families (all >= S)."""
        zi, ai, ni = self._parts(idx)
        zj, aj, nj = self._parts(nb.reshape(-1))
        zj, aj, nj = zj.reshape(*nb.shape, -1), aj.reshape(nb.shape), nj.reshape(nb.shape)
        dot = 1 + ai[:, None] + aj + np.einsum("nd,nkd->nk", zi, zj)
        return (dot / (ni[:, None] * nj)).astype(np.float32)


def family_neighbors(idx: np.ndarray, n: int, s: int, rng) -> np.ndarray:
    """(len(idx), K) other synthetic files of each file's family (f + s, f + 2s, ... < n: the
    seed file f itself is not one), distinct: members q + j*d (mod the family's size) for
    j = 1..K, d drawn in 1 .. (size - 1) // K."""
    f, q = idx % s, idx // s - 1
    size = (n - f + s - 1) // s - 1
    if (size <= K).any():
        raise ValueError(f"families need more than {K} members: --n >= {(K + 2) * s}")
    d = 1 + (rng.random(len(idx)) * ((size - 1) // K)).astype(np.int64)
    j = np.arange(1, K + 1)
    return f[:, None] + (1 + (q[:, None] + j[None, :] * d[:, None]) % size[:, None]) * s


def synthesize(
    lake_dir: str,
    source: str,
    n: int,
    s: int,
    noise: float,
    written: str,
    force_ann: bool = False,
) -> dict:
    """Extend the seed run's lake over files S .. N-1 (see the module's docstring)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from embedlake.tasks import catalog, graph, lake
    from embedlake.tasks.schemas import FILES_SCHEMA, MAP_SCHEMA, RUNS_SCHEMA, THUMBNAILS_SCHEMA

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    root = lake.Lake.at(lake_dir)
    runs = root.read_table("runs").to_pylist()
    (run,) = {r["run_id"] for r in runs}
    made = np.load(written, allow_pickle=True)
    ids, sizes, mtimes = made["ids"], made["sizes"], made["mtimes"]
    assert len(ids) == n - s

    # --- files: the seed rows, by file number
    parts = [p for p in root.part_names("files") if p.startswith(run)]
    seed_files = pa.concat_tables(pq.read_table(Path(lake_dir) / "files" / p) for p in parts)
    seed_files = seed_files.sort_by("path")
    paths = seed_files.column("path").to_pylist()
    if paths != [rel_path(i) for i in range(s)]:
        raise RuntimeError("the seed run's files are not the first S files")
    seed_ids = seed_files.column("image_id").to_pylist()
    idx_all = np.arange(s, n)
    now = datetime.now(UTC)
    seq = max(int(p.removesuffix(".parquet").rsplit("-", 1)[1]) for p in parts) + 1
    for c0 in range(0, n - s, FILES_PART_ROWS):
        idx = idx_all[c0 : c0 + FILES_PART_ROWS]
        rows = seed_files.take(pa.array(idx % s))
        k = slice(c0, c0 + len(idx))
        new = {
            "path": pa.array([rel_path(int(i)) for i in idx], pa.string()),
            "size_bytes": pa.array(sizes[k], pa.int64()),
            "mtime": pa.array(mtimes[k] // 1000, pa.timestamp("us", tz="UTC")),
            "mtime_ns": pa.array(mtimes[k], pa.int64()),
            "image_id": pa.array(ids[k], pa.string()),
            "recorded_at": pa.array([now] * len(idx), pa.timestamp("us", tz="UTC")),
        }
        for name, column in new.items():
            rows = rows.set_column(FILES_SCHEMA.get_field_index(name), name, column)
        root.write_part(rows.cast(FILES_SCHEMA), "files", f"{run}-{seq:06d}.parquet")
        seq += 1
    lap("files")

    # --- embeddings: each group's seed vectors and norms, by file number
    seed_emb = root.read_table("embeddings")
    keys = graph.group_keys(root)
    if len(keys) != 2:
        raise RuntimeError(f"expected two backbone groups, found {keys}")
    position = {image_id: i for i, image_id in enumerate(seed_ids)}
    families, norms = {}, {}
    for g, key in enumerate(keys):
        rows = seed_emb.filter(
            pc.and_(
                pc.equal(seed_emb["backbone"], key.backbone),
                pc.and_(
                    pc.equal(seed_emb["weights_id"], key.weights_id),
                    pc.equal(seed_emb["precision"], key.precision),
                ),
            )
        )
        order = np.array([position[i] for i in rows.column("image_id").to_pylist()])
        if len(order) != s or set(order) != set(range(s)):
            raise RuntimeError(f"group {key}: {len(order)} seed embeddings for {s} files")
        vectors = lake.vectors_of(rows)
        base = np.empty_like(vectors)
        base[order] = vectors
        norm = np.empty(s, np.float32)
        norm[order] = rows.column("norm").to_numpy()
        families[key], norms[key] = Families(base, noise, seed=g + 1), norm
    by_id = np.argsort(ids, kind="stable")  # a run embeds its todo list sorted by image_id
    seq = 1 + max(
        int(p.removesuffix(".parquet").rsplit("-", 1)[1]) for p in graph.embedding_part_names(root)
    )
    for c0 in range(0, n - s, EMBED_PART_IMAGES):
        pick = by_id[c0 : c0 + EMBED_PART_IMAGES]
        idx = idx_all[pick]
        tables = [
            lake.embeddings_table(
                image_ids=list(ids[pick]),
                backbone=key.backbone,
                weights_id=key.weights_id,
                precision=key.precision,
                vectors=families[key].vectors(idx),
                norms=norms[key][idx % s],
                run_id=run,
            )
            for key in keys
        ]
        part = pa.concat_tables(tables).sort_by("image_id")
        root.write_part(part, "embeddings", f"{run}-{seq:06d}.parquet")
        seq += 1
    lap("embeddings")

    # --- thumbnails: the base's
    thumbs = root.read_table("thumbnails").to_pylist()
    thumb_of = {row["image_id"]: row for row in thumbs}
    base_thumbs = [thumb_of[i] for i in seed_ids]
    seq = 1 + max(
        int(p.removesuffix(".parquet").rsplit("-", 1)[1])
        for p in root.part_names("thumbnails")
        if p.startswith(run)
    )
    for c0 in range(0, n - s, THUMB_PART_IMAGES):
        pick = by_id[c0 : c0 + THUMB_PART_IMAGES]
        fam = idx_all[pick] % s
        table = pa.table(
            {
                "image_id": pa.array(ids[pick], pa.string()),
                "thumbnail": pa.array([base_thumbs[f]["thumbnail"] for f in fam], pa.binary()),
                "width": pa.array([base_thumbs[f]["width"] for f in fam], pa.int32()),
                "height": pa.array([base_thumbs[f]["height"] for f in fam], pa.int32()),
                "run_id": pa.array([run] * len(pick), pa.string()),
            },
            schema=THUMBNAILS_SCHEMA,
        )
        root.write_part(table.sort_by("image_id"), "thumbnails", f"{run}-{seq:06d}.parquet")
        seq += 1
    lap("thumbnails")

    # --- neighbours: lists of files S .. N-1 within their family, true cosines, ranked
    from embedlake.tasks.params import RunParams

    threshold = RunParams.model_fields["ann_threshold"].default
    ann = n > threshold or force_ann
    all_ids = np.concatenate([np.asarray(seed_ids, object), ids])  # by file number
    rng = np.random.default_rng(11)
    lists_written = {}
    for key in keys:
        block = ANN_BLOCK if ann else n
        written_here = 0
        for c0 in range(0, n - s, block):
            idx = idx_all[c0 : c0 + block]
            nb = family_neighbors(idx, n, s, rng)
            sims = families[key].member_cosines(idx, nb)
            order = np.argsort(-sims, axis=1, kind="stable")
            nb = np.take_along_axis(nb, order, axis=1)
            sims = np.take_along_axis(sims, order, axis=1)
            lists = graph.Lists(all_ids[idx], all_ids[nb], sims)
            graph._write_lists(root, key, lists, graph.ANN_METHOD if ann else "exact")
            written_here += len(idx)
        lists_written[graph.group_name(*key)] = {
            "lists": written_here,
            "mean_10th_similarity_last_block": round(float(sims[:, -1].mean()), 4),
        }
    lap("neighbors")

    # --- the ANN index of each group, when the collection is past the threshold (the code a
    # run's update runs when a group first outgrows it: train on a sample, insert every part)
    index = {}
    if ann:
        for key in keys:
            group = graph._new_index(root, key, graph.group_size(root, key))
            names = graph.embedding_part_names(root)
            group.add(graph.iter_group_blocks(root, key, parts=names, block_rows=65_536), names)
            group.commit()
            index[graph.group_name(*key)] = {
                "nlist": group.manifest.nlist,
                "segments": len(group.manifest.segments),
            }
        lap("ann_index")

    # --- map: the seed's fit part, rewritten with every file (a fit's part holds them all)
    jitter_rng = np.random.default_rng(12)
    for key in keys:
        name = graph.group_name(*key)
        fit_parts = sorted(p for p in root.part_names("map") if p.startswith(f"{name}-"))
        if len(fit_parts) != 1:
            raise RuntimeError(f"group {name}: map parts {fit_parts}")
        fit = pq.read_table(Path(lake_dir) / "map" / fit_parts[0])
        xy = dict(
            zip(
                fit.column("image_id").to_pylist(),
                zip(fit["x"].to_pylist(), fit["y"].to_pylist(), strict=True),
                strict=True,
            )
        )
        parent = np.array([xy[i] for i in seed_ids], np.float32)
        spread = float(parent.std()) * 0.05
        placed = parent[idx_all % s] + jitter_rng.normal(0, spread, (n - s, 2)).astype(np.float32)
        extra = pa.table(
            {
                "image_id": pa.array(ids, pa.string()),
                "backbone": pa.array([key.backbone] * (n - s), pa.string()),
                "weights_id": pa.array([key.weights_id] * (n - s), pa.string()),
                "precision": pa.array([key.precision] * (n - s), pa.string()),
                "x": pa.array(placed[:, 0]),
                "y": pa.array(placed[:, 1]),
                "map_version": pa.array(np.ones(n - s, np.int32)),
                "placed": pa.array(["neighbors"] * (n - s), pa.string()),
                "run_id": pa.array([run] * (n - s), pa.string()),
            },
            schema=MAP_SCHEMA,
        )
        table = pa.concat_tables([fit.cast(MAP_SCHEMA), extra]).sort_by("image_id")
        root.write_part(table, "map", fit_parts[0])
    lap("map")

    # --- runs: the seed run's rows with the counts of N
    counts = {"n_files": n, "n_files_new": n, "n_ok": n, "n_unique_images": n, "n_embedded": n}
    for part in root.part_names("runs"):
        table = pq.read_table(Path(lake_dir) / "runs" / part)
        rows = table.to_pylist()
        if part == lake.SCHEMA_PART or not rows:
            continue
        for row in rows:
            for name, value in counts.items():
                if row.get(name) is not None:
                    row[name] = value
        root.write_part(lake.rows_to_table(rows, RUNS_SCHEMA), "runs", part)
    catalog.build_catalog(root)
    lap("runs_and_catalog")
    return {
        "seed_run_id": run,
        "groups": [list(key) for key in keys],
        "ann": ann,
        "ann_index": index,
        "synthetic_lists_written": lists_written,
        "seconds": timings,
    }


# ---------------------------------------------------------------- the measured rerun


def _rerun_row(lake_dir: Path) -> dict:
    import duckdb

    with duckdb.connect(str(lake_dir / "catalog.duckdb"), read_only=True) as con:
        cur = con.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1")
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def _latest_parts(lake_dir: Path, run_id: str, since: datetime) -> dict:
    """What the rerun wrote: lists per group (its neighbour parts), map rows per part."""
    import pyarrow.parquet as pq

    out: dict = {"neighbors_lists": {}, "map_rows": {}}
    for part in sorted((lake_dir / "neighbors").glob("*.parquet")):
        match = re.match(r"^(.+)-(\d{8})\.parquet$", part.name)
        if match and part.stat().st_mtime >= since.timestamp():
            rows = pq.ParquetFile(part).metadata.num_rows
            out["neighbors_lists"][part.name] = rows // K
    for part in (lake_dir / "map").glob(f"*-{run_id}.parquet"):
        out["map_rows"][part.name] = pq.ParquetFile(part).metadata.num_rows
    return out


def _strace_rerun(source: Path, lake_dir: Path, env: dict, work: Path) -> dict:
    """One more rerun, nothing new, under strace: opens of files under SOURCE/existing."""
    log = work / "strace.log"
    command = [
        "strace",
        "-f",
        "--seccomp-bpf",
        "-e",
        "trace=open,openat",
        "-o",
        str(log),
        sys.executable,
        "-m",
        "embedlake.flows.cli",
        "run",
        str(source),
        "--lake",
        str(lake_dir),
        "--weights",
        "random",
    ]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    existing = str(source.resolve() / "existing") + "/"
    opened: set[str] = set()
    calls = 0
    with open(log, errors="replace") as f:
        for line in f:
            at = line.find(existing)
            if at >= 0 and "ENOENT" not in line:
                path = line[at:].split('"', 1)[0]
                if path.endswith(".jpg"):
                    calls += 1
                    opened.add(path)
    log.unlink()
    row = _rerun_row(lake_dir)
    return {
        "what": "a rerun with nothing new under strace -f --seccomp-bpf -e trace=open,openat "
        "(untimed: strace slows it); opens of the existing JPEGs by any process of the run",
        "wall_seconds_under_strace": round(wall, 1),
        "existing_files_opened": len(opened),
        "open_calls_on_existing_files": calls,
        "n_files_unchanged": row["n_files_unchanged"],
        "n_embedded": row["n_embedded"],
    }


_STEP_FUNCTIONS = {  # the flow's steps (tasks/steps.py, tasks/inventory.py): a stage each
    "start_run_fn": "start",
    "rebuild_catalog_fn": "catalog (open-catalog and catalog)",
    "read_metadata_fn": "read-sidecar",
    "discover_source_fn": "discover",
    "attach_metadata_fn": "sidecar",
    "load_backbones_fn": "load-backbones",
    "embed_images_fn": "embed",
    "record_embedded_fn": "embed (record counts)",
    "build_neighbors_fn": "neighbors",
    "build_maps_fn": "map",
    "probe_labels_fn": "probes",
    "finish_run_fn": "finish",
    "publish_report_fn": "report",
}
_PRODUCT = ("/tasks/", "/flows/", "embedlake/tasks/", "embedlake/flows/")


def _profile_rerun(source: Path, lake_dir: Path, env: dict, work: Path, new: int, rate: int):
    """One more rerun adding `new` images, under `py-spy record --idle` (the CLI process, every
    thread, `rate` samples a second; untimed): per stage, the product functions it spent its
    samples in (the deepest frame under tasks/ or flows/ of each sample)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {"skipped": "py-spy is not installed in this environment"}
    k = 0
    while (source / f"new-profile-{k}").exists():  # an earlier profile's images stay
        k += 1
    folder = source / f"new-profile-{k}"
    folder.mkdir()
    for path in make_photos(work / f"profile-tmp-{k}", new, (80 + k, 80 + k)):  # new bytes
        path.rename(folder / path.name)
    raw = work / "py-spy.txt"
    command = [
        *(str(spy), "record", "--format", "raw", "--full-filenames", "--idle", "--rate", str(rate)),
        *("-o", str(raw), "--"),
        *(sys.executable, "-m", "embedlake.flows.cli", "run", str(source)),
        *("--lake", str(lake_dir), "--weights", "random"),
    ]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    import embedlake.tasks

    code = str(Path(embedlake.tasks.__file__).parent.parent)  # tasks/ and flows/ live here
    product = re.compile(rf"\({re.escape(code)}/((?:tasks|flows)/[^:]+):\d+\)$")
    stages: dict[str, dict[str, dict[str, float]]] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        names = [f.split(" (", 1)[0] for f in frames]
        stage = next((_STEP_FUNCTIONS[n] for n in names if n in _STEP_FUNCTIONS), None)
        mine = [(f, m) for f in frames if (m := product.search(f))]
        if stage is None:
            stage = "other threads" if mine else "outside embedlake's code (imports, Prefect)"
        if mine:
            frame, match = mine[-1]
            where = f"{frame.split(' (', 1)[0]} ({match[1]})"
        else:
            where = "(no embedlake frame)"
        seconds = int(count) / rate
        bucket = stages.setdefault(stage, {"embedlake": {}, "leaf": {}})
        bucket["embedlake"][where] = bucket["embedlake"].get(where, 0) + seconds
        leaf = re.sub(r"\(/.*/([^/]+:\d+)\)$", r"(\1)", frames[-1])
        bucket["leaf"][leaf] = bucket["leaf"].get(leaf, 0) + seconds
    row = _rerun_row(lake_dir)

    def top(counts: dict[str, float]) -> dict[str, float]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:8]
        return {name: round(s, 1) for name, s in best}

    out = {}
    for stage, found in sorted(stages.items(), key=lambda kv: -sum(kv[1]["leaf"].values())):
        out[stage] = {
            "seconds": round(sum(found["leaf"].values()), 1),
            "deepest_embedlake_function": top(found["embedlake"]),
            "leaf_function": top(found["leaf"]),
        }
    return {
        "what": f"a rerun adding {new} images under py-spy record --idle --rate {rate} (the CLI "
        "process, every thread, waiting ones too: a thread waiting on Arrow's or DuckDB's own "
        "threads counts; untimed: sampling slows it). Each sample is counted under its stage "
        "(the step function on its stack) and the deepest embedlake frame on it; samples of "
        "threads without a step on their stack (thread pools, Prefect) are 'other threads' or "
        "'outside embedlake's code', idle waits included",
        "wall_seconds_under_py_spy": round(wall, 1),
        "n_embedded": row["n_embedded"],
        "stage_seconds": json.loads(row["stage_seconds"]),
        "samples_by_stage": out,
    }


def _machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": "shared machine; the page cache is warm from writing the lake (no cache drop)",
    }


def _stage_table(rerun: dict, row: dict, launched: datetime, ended: datetime, report_at) -> dict:
    """Seconds per stage of the timed run, in run order, with the untimed gaps filled in."""
    flow = json.loads(row["stage_seconds"])
    engine = {k: flow.pop(k) for k in list(flow) if k not in _FLOW_STAGES}
    stages = {"start": (row["started_at"] - launched).total_seconds()}
    stages.update({name: flow[name] for name in _FLOW_STAGES if name in flow})
    accounted = sum(v for k, v in stages.items() if k != "start")
    stages["finish_unaccounted"] = (
        row["finished_at"] - row["started_at"]
    ).total_seconds() - accounted
    if report_at is not None:
        stages["report"] = (report_at - row["finished_at"]).total_seconds()
        stages["exit"] = (ended - report_at).total_seconds()
    return {
        "stages": {k: round(v, 2) for k, v in stages.items()},
        "embed_split": engine,
    }


_FLOW_STAGES = (
    "open-catalog",
    "read-sidecar",
    "discover",
    "sidecar",
    "load-backbones",
    "embed",
    "neighbors",
    "map",
    "probes",
    "catalog",
)


def measure(args) -> dict:
    n, m, s = args.n, args.m, args.seed_images
    if n < (K + 2) * s:
        raise SystemExit(f"--n must be at least {(K + 2) * s} with --seed-images {s}")
    work = WORK / f"n{n}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    source, lake_dir = work / "source", work / "lake"
    env = _run_env(work)
    result: dict = {
        "what": "a real `embedlake run` adding M new images to a lake of N made as a run would "
        "leave it; see 'synthetic' and bench/scale_run.py",
        "synthetic": " ".join(
            __doc__.split("How the lake of N is made:\n", 1)[1].split("\n\n")[0].split()
        ),
        "n": n,
        "m": m,
        "seed_images": s,
        "ann_forced": args.ann,
        "noise": args.noise,
        "command": "python bench/scale_run.py " + " ".join(sys.argv[1:]),
        "timed_command": f"embedlake run {source} --lake {lake_dir} --weights random",
        "machine": _machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": {"start": os.getloadavg()},
        "setup_seconds": {},
    }
    setup = result["setup_seconds"]
    t = time.perf_counter()
    bases = [p.read_bytes() for p in make_photos(work / "bases", s, (48, 48))]
    if len(set(bases)) != s:
        raise RuntimeError("the base photos are not distinct")
    seed_files = write_files(source, bases, 0, s)
    setup["seed_files"] = round(time.perf_counter() - t, 1)
    print(f"seed run over {s} files ...", flush=True)
    t = time.perf_counter()
    try:
        seed = run_embedlake(source, lake_dir, env, ("--no-report",))
    except RuntimeError as exc:  # seen once: the ephemeral Prefect server did not answer in time
        print(f"  the seed run failed ({exc}); once more on a fresh lake", flush=True)
        shutil.rmtree(lake_dir, ignore_errors=True)
        seed = run_embedlake(source, lake_dir, env, ("--no-report",))
    setup["seed_run"] = round(time.perf_counter() - t, 1)
    result["seed_run"] = {k: seed[k] for k in ("wall_seconds", "peak_rss_mb", "n_embedded")}
    if seed["n_embedded"] != s:
        raise RuntimeError(f"the seed run embedded {seed['n_embedded']}, not {s}")
    print(f"writing files {s} .. {n - 1} ...", flush=True)
    t = time.perf_counter()
    made = write_files(source, bases, s, n)
    if len(set(made["ids"]) | set(seed_files["ids"])) != n:
        raise RuntimeError("two existing files share their bytes")
    written = work / "written.npz"
    np.savez(written, **made)
    setup["write_files"] = round(time.perf_counter() - t, 1)
    print("extending the lake ...", flush=True)
    t = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--synthesize",
            json.dumps([str(lake_dir), str(source), n, s, args.noise, str(written), args.ann]),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result["synthetic_lake"] = json.loads(out.stdout.strip().splitlines()[-1])
    setup["synthesize"] = round(time.perf_counter() - t, 1)
    print(f"  {result['synthetic_lake']}", flush=True)
    timed_rerun(result, work, m, n, "new")
    ok = result["rerun"]["took_synthetic_lake_as_done"]
    if args.strace:
        print("strace rerun (untimed) ...", flush=True)
        result["strace_rerun"] = _strace_rerun(source, lake_dir, env, work)
    if args.profile:
        print("py-spy rerun (untimed) ...", flush=True)
        result["profile_rerun"] = _profile_rerun(source, lake_dir, env, work, 20, args.profile)
    result["load_average"]["end"] = os.getloadavg()
    result["disk_free_gib_at_end"] = round(shutil.disk_usage(WORK).free / 2**30, 1)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if not ok:
        out_path = MEASURED / f"scale-run-{n}-FAILED.json"
        out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        counts = result["rerun"]["counts"]
        raise SystemExit(
            f"the rerun embedded {counts['n_embedded']} (expected {m}) and left "
            f"{counts['n_files_unchanged']} files unread (expected {n}): {out_path}"
        )
    return result


def rerun_kept(args) -> dict:
    """Another timed rerun adding M images, on the lake an earlier --keep run of this --n left
    (and any reruns since): what the current code takes on the same lake."""
    work = WORK / f"n{args.n}"
    existing = _rerun_row(work / "lake")["n_files"]
    result: dict = {
        "what": "a real `embedlake run` adding M new images to the lake an earlier `--keep` run "
        f"of bench/scale_run.py left (its JSON, scale-run-{args.n}.json, says what is synthetic); "
        "n_existing counts the images earlier reruns added",
        "n": args.n,
        "n_existing": existing,
        "m": args.m,
        "command": "python bench/scale_run.py " + " ".join(sys.argv[1:]),
        "machine": _machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": {"start": os.getloadavg()},
    }
    folder = "new-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    timed_rerun(result, work, args.m, existing, folder)
    result["load_average"]["end"] = os.getloadavg()
    if not result["rerun"]["took_synthetic_lake_as_done"]:
        raise SystemExit(f"the rerun did not embed {args.m} alone: {result['rerun']['counts']}")
    if args.strace:
        print("strace rerun (untimed) ...", flush=True)
        result["strace_rerun"] = _strace_rerun(work / "source", work / "lake", _run_env(work), work)
    return result


def timed_rerun(result: dict, work: Path, m: int, n: int, folder: str) -> None:
    """M new JPEGs into SOURCE/<folder>, then the timed `embedlake run` over the N files already
    in the lake and them; its figures go to result["rerun"] (and the lake's bytes around it)."""
    source, lake_dir = work / "source", work / "lake"
    env = _run_env(work)
    setup = result.setdefault("setup_seconds", {})
    t = time.perf_counter()
    new_dir = source / folder
    side = 96 + sum(1 for p in source.iterdir() if p.name.startswith("new"))  # bytes never seen
    new_dir.mkdir()
    for path in make_photos(work / f"{folder}-tmp", m, (side, side)):
        path.rename(new_dir / path.name)
    setup["new_files"] = round(time.perf_counter() - t, 1)
    result["bytes_before_rerun"] = {"lake": _lake_bytes(str(lake_dir)), "source": _du(source)}

    print(f"timed rerun: {n:,} existing + {m:,} new ...", flush=True)
    result["load_average"]["before_rerun"] = os.getloadavg()
    launched = datetime.now(UTC)
    rerun = run_embedlake(source, lake_dir, env)
    ended = datetime.now(UTC)
    result["load_average"]["after_rerun"] = os.getloadavg()
    row = _rerun_row(lake_dir)
    summary = lake_dir / "reports" / row["run_id"] / "summary.json"
    report_at = datetime.fromtimestamp(summary.stat().st_mtime, UTC) if summary.exists() else None
    table = _stage_table(rerun, row, launched, ended, report_at)
    result["rerun"] = {
        "run_id": row["run_id"],
        "status": row["status"],
        "wall_seconds": round(rerun["wall_seconds"], 1),
        "seconds_excluding_embed": round(
            rerun["wall_seconds"] - table["stages"].get("embed", 0), 1
        ),
        **table,
        "peak_rss_mb": round(rerun["peak_rss_mb"]),
        "peak_rss_mb_hwm_sum": round(rerun["peak_rss_mb_hwm_sum"]),
        "peak_rss_mb_by_process": rerun["peak_rss_mb_by_process"],
        "rss_samples": rerun["rss_samples"],
        "counts": {
            k: row[k]
            for k in (
                "n_files",
                "n_files_new",
                "n_files_changed",
                "n_files_unchanged",
                "n_files_gone",
                "n_ok",
                "n_unique_images",
                "n_embedded",
                "n_skipped",
            )
        },
        "embed_rate_images_per_second": rerun["embed_rate_in_run"],
        "device": rerun["device"],
        "precision": rerun["precision"],
        "written": _latest_parts(lake_dir, row["run_id"], launched),
        # what each report section took (its summary.json), where the report's time goes
        "report_section_seconds": (
            json.loads(summary.read_text()).get("section_seconds") if summary.exists() else None
        ),
    }
    after = _lake_bytes(str(lake_dir))
    result["bytes_after_rerun"] = {"lake": after}
    result["bytes_written_by_rerun"] = {
        k: v - result["bytes_before_rerun"]["lake"].get(k, 0) for k, v in after.items()
    }
    ok = row["n_embedded"] == m and row["n_files_unchanged"] == n
    result["rerun"]["took_synthetic_lake_as_done"] = ok


def _run_env(work: Path) -> dict:
    """The environment of the runs the bench times or traces, all under `work`."""
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(work / "prefect"),
        EMBEDLAKE_CACHE=str(work / "cache"),
        # Prefect's default 20 s was not always enough for its ephemeral server to start here
        # (a fresh PREFECT_HOME runs its migrations): runs failed with "Timed out while
        # attempting to connect to ephemeral Prefect API server" on an idle machine
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )


def _du(folder: Path) -> dict:
    """Apparent bytes and allocated bytes of the files under `folder`."""
    apparent = allocated = files = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            info = os.lstat(os.path.join(dirpath, name))
            apparent += info.st_size
            allocated += info.st_blocks * 512
            files += 1
    return {"files": files, "bytes": apparent, "allocated_bytes": allocated}


def compare(paths: list[Path]) -> dict:
    """Per stage: seconds at each N, and the ratio between the largest and smallest N."""
    runs = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["n"])
    runs = [r for r in runs if r.get("rerun", {}).get("took_synthetic_lake_as_done")]
    if len(runs) < 2:
        return {}
    small, large = runs[0], runs[-1]
    growth = large["n"] / small["n"]
    names = list(large["rerun"]["stages"])
    table = {}
    lines = []
    for name in names:
        at = {str(r["n"]): r["rerun"]["stages"].get(name) for r in runs}
        a, b = small["rerun"]["stages"].get(name), large["rerun"]["stages"].get(name)
        entry: dict = {"seconds_by_n": at}
        if a is not None and b is not None:
            entry["added_seconds"] = round(b - a, 2)
            if a > 0.05:
                entry["ratio"] = round(b / a, 2)
        table[name] = entry
    for name, entry in sorted(table.items(), key=lambda kv: -(kv[1].get("added_seconds") or 0)):
        added = entry.get("added_seconds")
        if added is None or added < 1.0 or name == "embed":
            continue
        at = entry["seconds_by_n"]
        lines.append(f"{name}: " + " -> ".join(f"{at[str(r['n'])]} s at {r['n']:,}" for r in runs))
    other = ("wall_seconds", "seconds_excluding_embed", "peak_rss_mb")
    totals = {k: {str(r["n"]): r["rerun"][k] for r in runs} for k in other}
    return {
        "sizes": [r["n"] for r in runs],
        "n_ratio": growth,
        "note": (
            f"N x{growth:g} ({small['n']:,} -> {large['n']:,}), M {small['m']:,} -> "
            f"{large['m']:,}. Stages that grew by 1 s or more (embed aside: it follows M): "
            + "; ".join(lines)
            + ". Totals: "
            + "; ".join(f"{k} " + " -> ".join(str(v) for v in totals[k].values()) for k in other)
        ),
        "stages": table,
        "totals": totals,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="existing images")
    parser.add_argument("--m", type=int, default=200, help="new images the timed rerun embeds")
    parser.add_argument("--seed-images", type=int, default=256)
    parser.add_argument("--noise", type=float, default=0.33)
    parser.add_argument(
        "--ann",
        action="store_true",
        help="build the ANN index below the threshold too (a group with one stays in ANN mode)",
    )
    parser.add_argument("--strace", action="store_true", help="count opens in one more rerun")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="HZ",
        help="one more rerun adding 20 images under py-spy at HZ samples/s (untimed)",
    )
    parser.add_argument(
        "--profile-kept",
        action="store_true",
        help="only the py-spy rerun, on the lake of an earlier --keep run of this --n",
    )
    parser.add_argument(
        "--rerun-kept",
        action="store_true",
        help="only a timed rerun adding M images, on the lake of an earlier --keep run of this --n",
    )
    parser.add_argument("--out", help="the JSON (default bench/measured/scale-run-<N>.json)")
    parser.add_argument("--keep", action="store_true", help="keep /tmp/scale_run/n<N>")
    parser.add_argument("--compare", action="store_true", help="what_grows across the JSONs")
    parser.add_argument("--synthesize", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.synthesize:
        print(json.dumps(synthesize(*json.loads(args.synthesize))))
        return 0
    paths = sorted(MEASURED.glob("scale-run-[0-9]*.json"))
    paths = [p for p in paths if re.fullmatch(r"scale-run-\d+\.json", p.name)]
    if args.profile_kept:  # the diagnostic rerun alone, on the lake a --keep run left
        work = WORK / f"n{args.n}"
        out = MEASURED / f"scale-run-{args.n}.json"
        result = json.loads(out.read_text())
        env = _run_env(work)
        rate = args.profile or 25
        result["profile_rerun"] = _profile_rerun(
            work / "source", work / "lake", env, work, 20, rate
        )
        result["profile_rerun"]["command"] = "python bench/scale_run.py " + " ".join(sys.argv[1:])
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result["profile_rerun"], indent=2))
        return 0
    if args.rerun_kept:
        result = rerun_kept(args)
        out = Path(args.out) if args.out else MEASURED / f"scale-run-{args.n}-kept.json"
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result["rerun"], indent=2, default=str))
        print(f"wrote {out}")
        return 0
    if not args.compare:
        result = measure(args)
        out = Path(args.out) if args.out else MEASURED / f"scale-run-{args.n}.json"
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result["rerun"], indent=2, default=str))
        print(f"wrote {out}")
        paths = sorted(set(paths) | {out})
    what = compare(paths)
    if what:
        for path in paths:
            data = json.loads(path.read_text())
            data["what_grows"] = what
            path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(what["note"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
