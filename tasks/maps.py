"""The map: a 2-D place for every current image, per (backbone, weights_id, precision) group.

Each group's map has versions (`map_version` 1, 2, ...). A version starts with a FIT: the
group's current images that have an embedding are sorted by image_id (a SHA-256, so the order is
uniform and fixed), the first `FIT_SAMPLE` (5,000) of them are laid out by openTSNE (after PCA
to 50 dimensions; below `MIN_TSNE` images, by the first two principal components alone) and every
other image is PLACED FROM ITS NEIGHBOURS: at the similarity-weighted mean of the positions of
its stored neighbours (the `neighbors` graph, already updated by the run) that have a place, in
rounds, so an image whose neighbours are placed in one round is placed in the next. An image none
of whose neighbours ever gets a place (no neighbour list, or an island of unplaced images) gets
the documented FALLBACK: the centroid of the placed points plus a small jitter read from its id
(`placed` = 'fallback'). Every image to place gets a row: none is dropped.

A later run places only the images the latest version lacks (new in the collection, or newly
embedded), from their neighbours, on the existing map: no refit, the same `map_version`. Once the
images placed since the fit would exceed `REFIT_SHARE` (half) of the images the fit wrote, the
group is refitted (a new version): the map then follows the collection's drift rather than
piling new images on positions chosen for the old ones. `embedlake reindex` refits every group.

Storage: `map/<group>-<version:08d>-<run_id>.parquet`, one part per group and pass: a fit's part
holds every current image of the group, a placement's only the images it placed. The `map` view
(sql/catalog/80_map.sql) shows, per group, its latest version's latest row per current image.

Memory: ids and positions live in a DuckDB connection (spilling to a temporary folder) as an
integer key per image, edges as (key, key, weight); only the fit sample's vectors are held in
NumPy. Nothing is held per image in Python objects, nor the collection's ids in Arrow: they are
streamed into the session.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import graph, lake
from .lake import GroupKey
from .schemas import MAP_SCHEMA

if TYPE_CHECKING:
    from .inventory import Inventory

__all__ = [
    "FIT_SAMPLE",
    "MIN_TSNE",
    "REFIT_SHARE",
    "MapOutcome",
    "fit_layout",
    "needs_refit",
    "place_from_neighbors",
    "run_collection",
    "update_group_map",
    "update_maps",
]

# The fit's sample, the fit's cost cap: fit_layout on 5,000 clustered 1024-d vectors took 75 s
# on this 2-core machine at load 5 (one thread; openTSNE on 20,000 took 199 s,
# bench/measured/map-choice.json), a fraction of that idle; every other image of a group,
# 1 M or 10 M, is placed from its neighbours in SQL (bench/measured/map-scale-1000000.json)
FIT_SAMPLE = 5_000
# below this many images the layout is their first two principal components: a t-SNE of a
# handful of points shows nothing PCA does not, and costs a second of a 10-image test run
MIN_TSNE = 64
# refit once the images placed since the fit exceed this share of the images the fit wrote
REFIT_SHARE = 0.5
PCA_DIMS = 50
_BATCH_ROWS = 65_536  # ids streamed into the placement's session a batch at a time
ROUNDS = 8  # placement rounds: chains of new images placed one through another
SEED = 0
_log = logging.getLogger("embedlake")


@dataclass
class MapOutcome:
    """What one group's map update did: 'fit' (a new version), 'placed' (new images on the
    existing version), 'unchanged' (nothing to place) or 'empty' (no current image)."""

    group: str
    action: str
    map_version: int
    n_fit: int = 0  # laid out by the fit
    n_neighbors: int = 0  # placed from neighbours
    n_fallback: int = 0  # no placed neighbour: the fallback place
    seconds: float = 0.0

    def line(self) -> str:
        n = self.n_fit + self.n_neighbors + self.n_fallback
        what = {
            "fit": f"fitted version {self.map_version} on {self.n_fit} images, "
            f"{self.n_neighbors} placed from neighbours",
            "placed": f"placed {self.n_neighbors} new images from neighbours on version "
            f"{self.map_version}",
        }.get(self.action, f"{self.action} (version {self.map_version})")
        fallback = f", {self.n_fallback} at the fallback place" if self.n_fallback else ""
        return f"map {self.group}: {what}{fallback} ({n} rows) in {self.seconds:.2f} s"


# ------------------------------------------------------------------------ pure functions


def needs_refit(n_at_fit: int, n_since: int, n_new: int, share: float = REFIT_SHARE) -> bool:
    """Whether a group whose latest version's fit wrote `n_at_fit` images, and later runs placed
    `n_since`, is refitted rather than given `n_new` more images from neighbours. No map yet
    (`n_at_fit` 0) is always a fit."""
    return n_at_fit <= 0 or n_since + n_new > share * n_at_fit


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    """The first `dims` principal components of `x` (float64 SVD; each axis' sign fixed so its
    largest loading is positive: the same input gives the same output)."""
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    dims = min(dims, len(s))
    signs = np.sign(vt[np.arange(dims), np.abs(vt[:dims]).argmax(axis=1)])
    signs[signs == 0] = 1
    return (u[:, :dims] * s[:dims]) * signs


def fit_layout(vectors: np.ndarray, seed: int = SEED) -> np.ndarray:
    """(n, 2) float32 positions of `vectors` (n, dim): openTSNE on their 50 principal
    components, or those components' first two below `MIN_TSNE` rows; centred. Seeded."""
    n = len(vectors)
    out = np.zeros((n, 2), np.float64)
    if n >= MIN_TSNE:
        from openTSNE import TSNE

        if min(vectors.shape) > 2 * PCA_DIMS:
            from sklearn.decomposition import PCA

            solver = PCA(PCA_DIMS, svd_solver="randomized", random_state=seed)
            reduced = solver.fit_transform(vectors.astype(np.float32))
        else:
            reduced = _pca(vectors, PCA_DIMS)
        tsne = TSNE(
            perplexity=min(30.0, (n - 1) / 3.0),
            initialization="pca",
            # exact neighbours (a sample of at most FIT_SAMPLE x 50): no approximate index's
            # randomness. One thread: openTSNE's OpenMP threads spin at each of the 750
            # iterations' barriers, and on a busy 2-core machine 2 threads made a 150-point fit
            # 8.4-18.7 s against 0.7-4.5 s on one (the same layout either way)
            neighbors="exact",
            n_jobs=1,
            random_state=seed,
            verbose=False,
        )
        out[:] = np.asarray(tsne.fit(np.ascontiguousarray(reduced, dtype=np.float64)))
    elif n > 1:
        reduced = _pca(vectors, 2)
        out[:, : reduced.shape[1]] = reduced
    out -= out.mean(axis=0) if n else 0
    return out.astype(np.float32)


def place_from_neighbors(con, todo: pa.Table, pos: pa.Table, neighbor_parts: list[str]) -> pa.Table:
    """Positions (image_id, x, y, how) for the images of `todo` (image_id), from the neighbour
    lists in `neighbor_parts` (Parquet paths `con` can read) and the known positions `pos`
    (image_id, x, y, how); `todo` images already in `pos` keep theirs. Each image goes to the
    similarity-weighted mean of its placed neighbours, in up to `ROUNDS` rounds; the rest to the
    fallback place. One row per `todo` image, sorted by image_id."""
    con.register("todo_in", todo)
    con.register("pos_in", pos)
    con.execute("CREATE OR REPLACE TEMP TABLE todo AS SELECT image_id FROM todo_in")
    con.execute("CREATE OR REPLACE TEMP TABLE pos AS SELECT image_id, x, y, how FROM pos_in")
    _place(con, neighbor_parts)
    return con.sql(_sql("placed_rows.sql")).to_arrow_table()


def _place(con, neighbor_parts: list[str]) -> dict[str, int]:
    """Fill the temporary table `placed` (key, x, y, how) for every key of `keys` from `todo`
    and `pos` (temporary tables); counts by how."""
    con.execute("CREATE OR REPLACE TEMP TABLE keys AS " + _sql("keys.sql"))
    if neighbor_parts:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE edges AS " + _sql("group_edges.sql"),
            {"parts": neighbor_parts},
        )
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE edges (i BIGINT, j BIGINT, w DOUBLE)")
    con.execute("CREATE OR REPLACE TEMP TABLE placed AS " + _sql("placed_start.sql"))
    for _ in range(ROUNDS):
        (added,) = con.execute("INSERT INTO placed " + _sql("place_round.sql")).fetchone()
        if not added:
            break
    con.execute("INSERT INTO placed " + _sql("place_fallback.sql"))
    return dict(con.execute(_sql("placed_counts.sql")).fetchall())


@functools.cache
def _sql(name: str) -> str:
    from .catalog import sql_text

    return sql_text("map", name)


# ------------------------------------------------------------------------ the lake


def _map_part(name: str, version: int, run_id: str) -> str:
    return f"{name}-{version:08d}-{run_id}.parquet"


def _versions(root: lake.Lake, name: str) -> dict[int, list[str]]:
    """The group's map parts by version, each version's parts in name order (the fit first)."""
    pattern = re.compile(rf"^{re.escape(name)}-(\d{{8}})-[^/]+\.parquet$")
    found: dict[int, list[str]] = {}
    for part in root.part_names("map"):
        match = pattern.match(part)
        if match:
            found.setdefault(int(match[1]), []).append(part)
    return {v: sorted(parts) for v, parts in found.items()}


@contextlib.contextmanager
def _current_reader(root: lake.Lake, run_id: str | None) -> Iterator[pa.RecordBatchReader]:
    """The image_ids of the current collection once run `run_id` finishes (its own source's
    files from this run, other sources' from their latest finished run; `images` without one),
    as batches, on a read connection open for the block."""
    from .catalog import connect_read_only

    with connect_read_only(root) as con:
        query = con.sql(_sql("current_images.sql"), params={"run_id": run_id})
        yield query.to_arrow_reader(_BATCH_ROWS)


@contextlib.contextmanager
def _session() -> Iterator[Any]:
    """A DuckDB connection for the placement, spilling to a temporary folder of its own."""
    import duckdb

    with (
        tempfile.TemporaryDirectory(prefix="embedlake-map-") as spill,
        duckdb.connect(config={"memory_limit": "2GB", "temp_directory": spill}) as con,
    ):
        yield con


def _load_positions(con: Any, parts: list[str]) -> tuple[int, int]:
    """Temp table `pos` from the latest version's `parts` (empty without one); returns how many
    images its fit wrote and how many were placed since."""
    if not parts:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE pos (image_id VARCHAR, x FLOAT, y FLOAT, how VARCHAR)"
        )
        return 0, 0
    con.execute("CREATE OR REPLACE TEMP TABLE pos AS " + _sql("latest_map.sql"), {"parts": parts})
    rows = con.execute(_sql("part_rows.sql"), {"parts": parts}).fetchall()
    return rows[0][1], sum(n for _, n in rows[1:])


def _fit_positions(con: Any, root: lake.Lake, key: GroupKey, sample: pa.ChunkedArray, seed: int):
    """Temp table `pos`: the fitted layout of the `sample` images (a new map version)."""
    ids, vectors = graph.group_vectors(root, key, sample.combine_chunks())
    xy = fit_layout(vectors, seed)
    fitted = pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "x": pa.array(xy[:, 0]),
            "y": pa.array(xy[:, 1]),
            "how": pa.array(["fit"] * len(ids), pa.string()),
        }
    )
    con.register("fitted", fitted)
    con.execute("CREATE OR REPLACE TEMP TABLE pos AS SELECT * FROM fitted")


def update_group_map(
    root: lake.Lake,
    key: GroupKey,
    current: pa.Table | pa.RecordBatchReader | None,
    run_id: str,
    refit: bool = False,
    fit_sample: int = FIT_SAMPLE,
    refit_share: float = REFIT_SHARE,
    seed: int = SEED,
    con: Any = None,
    location: str | None = None,
) -> MapOutcome:
    """Bring one group's map up to date with `current` (image_id): place the images its latest
    version lacks, or fit a new version (`refit`, no map yet, or past the refit share). `con`:
    a connection of `_session` to reuse (update_maps' one for all groups) on which the lake is
    registered at `location` (a URL lake's filesystem registers once per connection); `current`
    None: that connection holds the table `current` already."""
    if con is None or location is None:
        with _session() as con:
            location = root.register(con)
            return update_group_map(
                root, key, current, run_id, refit, fit_sample, refit_share, seed, con, location
            )
    started = time.perf_counter()
    if current is not None:
        _load_current(con, current)
    name = graph.group_name(*key)
    versions = _versions(root, name)
    latest = max(versions, default=0)

    def path(folder: str, part: str) -> str:
        return f"{location}/{folder}/{part}"

    # the group's embedded ids, scanned by DuckDB (it spills): not held in Python
    con.execute(
        "CREATE OR REPLACE TEMP TABLE embedded AS " + _sql("embedded.sql"),
        {
            "parts": [path("embeddings", p) for p in graph.embedding_part_names(root)],
            "backbone": key.backbone,
            "weights_id": key.weights_id,
            "precision": key.precision,
        },
    )
    n_at_fit, n_since = _load_positions(con, [path("map", p) for p in versions.get(latest, [])])
    # the images to place stay in the session too (a refit's are every image of the group)
    todo = "CREATE OR REPLACE TEMP TABLE todo AS " + _sql("to_map.sql")
    con.execute(todo, {"all": False})
    fit = refit or needs_refit(n_at_fit, n_since, _count(con, "todo"), refit_share)
    if fit:
        con.execute(todo, {"all": True})
    if not _count(con, "todo"):
        action = "unchanged" if latest else "empty"
        return MapOutcome(name, action, latest, seconds=time.perf_counter() - started)
    version = latest + 1 if fit else latest
    if fit:  # the first ids in id order (uniform: SHA-256): a deterministic sample
        first = con.sql(
            "SELECT image_id FROM todo ORDER BY image_id LIMIT $n", params={"n": fit_sample}
        )
        _fit_positions(con, root, key, first.to_arrow_table().column("image_id"), seed)
    neighbor_parts = [path("neighbors", p) for _, p in graph._group_parts(root, name)]
    counts = _place(con, neighbor_parts)
    table = con.sql(
        _sql("map_rows.sql"),
        params={
            "backbone": key.backbone,
            "weights_id": key.weights_id,
            "precision": key.precision,
            "map_version": version,
            "run_id": run_id,
        },
    ).to_arrow_table()
    root.write_part(table.cast(MAP_SCHEMA), "map", _map_part(name, version, run_id))
    return MapOutcome(
        name,
        "fit" if fit else "placed",
        version,
        n_fit=counts.get("fit", 0),
        n_neighbors=counts.get("neighbors", 0),
        n_fallback=counts.get("fallback", 0),
        seconds=time.perf_counter() - started,
    )


def run_collection(
    root: lake.Lake, source: str, inventory: Inventory
) -> contextlib.AbstractContextManager[pa.RecordBatchReader] | None:
    """The current collection once this run of `source` finishes, without a catalog query over
    every run, when every finished run of the lake read that source (the usual lake): the run's
    'ok' image_ids, streamed (a context that yields a reader). None when other sources share the
    lake (`update_maps` then asks the catalog)."""
    runs = root.read_table("runs", columns=["source", "status"])
    finished = runs.filter(pc.equal(runs["status"], "finished"))
    if pc.all(pc.equal(finished["source"], source)).as_py() not in (True, None):
        return None
    return inventory.streaming(root, "ok_image_ids", batch_rows=_BATCH_ROWS)


def update_maps(
    root: lake.Lake | str,
    run_id: str,
    refit: bool = False,
    current_of: str | None = None,
    current: contextlib.AbstractContextManager[pa.RecordBatchReader] | None = None,
) -> list[MapOutcome]:
    """Every group's map brought up to date (`refit`: every group refitted, as `reindex` does)
    over `current` (a context yielding image_id batches: `run_collection`), by default the
    collection as it stands once `current_of` (a run id; None: the `images` view) finishes. The
    ids are streamed into the placement's DuckDB session (which spills), never held whole here.
    Call with the lake's writer lock held."""
    root = lake.Lake.at(root)
    outcomes = []
    with _session() as con:
        location = root.register(con)
        with current or _current_reader(root, current_of) as reader:
            _load_current(con, reader)
        for key in graph.group_keys(root):
            outcome = update_group_map(
                root, key, None, run_id, refit=refit, con=con, location=location
            )
            _log.info(outcome.line())
            outcomes.append(outcome)
    return outcomes


def _count(con: Any, table: str) -> int:
    return con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def _load_current(con: Any, current: pa.Table | pa.RecordBatchReader) -> None:
    """The session's table `current` (image_id) from a table or a stream of batches."""
    con.register("current_in", current)
    con.execute("CREATE OR REPLACE TEMP TABLE current AS SELECT image_id FROM current_in")
    con.unregister("current_in")
