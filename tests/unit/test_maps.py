"""The map (tasks/maps.py): layout, placement from neighbours, the refit threshold, on synthetic
vectors and lakes written directly (no run)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlake.tasks import graph, lake, maps
from embedlake.tasks.neighbors import build_neighbor_graph

pytestmark = pytest.mark.unit

KEY = lake.GroupKey("mobilenet_v1", "w-m", "fp32")


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim))
    x = centres[rng.integers(0, 5, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ids(start: int, stop: int) -> list[str]:
    # SHA-256-like hex ids, as the lake's (the fallback's jitter reads them as hex)
    return [f"{i:064x}" for i in range(start, stop)]


def _neighbor_part(path, rows: list[tuple[str, str, float]]) -> str:
    image_ids, neighbor_ids, sims = zip(*rows, strict=True) if rows else ((), (), ())
    ranks = [1 + sum(1 for r in rows[:i] if r[0] == rows[i][0]) for i in range(len(rows))]
    table = pa.table(
        {
            "image_id": pa.array(image_ids, pa.string()),
            "neighbor_id": pa.array(neighbor_ids, pa.string()),
            "rank": pa.array(ranks, pa.int16()),
            "similarity": pa.array(sims, pa.float32()),
        }
    )
    pq.write_table(table, path)
    return str(path)


def _pos(rows: list[tuple[str, float, float]]) -> pa.Table:
    ids, xs, ys = zip(*rows, strict=True)
    return pa.table(
        {
            "image_id": list(ids),
            "x": pa.array(xs, pa.float32()),
            "y": pa.array(ys, pa.float32()),
            "how": ["fit"] * len(ids),
        }
    )


def test_placement_is_the_similarity_weighted_mean_of_placed_neighbours(tmp_path):
    part = _neighbor_part(
        tmp_path / "g-00000001.parquet",
        [
            ("c", "a", 0.75),
            ("c", "b", 0.25),
            ("c", "zz", 0.9),  # zz: unknown, ignored
            ("d", "c", 0.5),  # placed through c, in the next round
            ("n", "a", -0.4),
            ("n", "b", 0.6),  # a negative similarity weighs (almost) nothing
        ],
    )
    todo = pa.table({"image_id": ["c", "d", "n", "lone"]})
    pos = _pos([("a", 0.0, 0.0), ("b", 10.0, 4.0)])
    out = maps.place_from_neighbors(duckdb.connect(), todo, pos, [part]).to_pylist()
    got = {row["image_id"]: row for row in out}
    assert [row["image_id"] for row in out] == ["c", "d", "lone", "n"]  # every one, sorted
    assert got["c"]["x"] == pytest.approx(2.5) and got["c"]["y"] == pytest.approx(1.0)
    assert (got["d"]["x"], got["d"]["y"]) == (got["c"]["x"], got["c"]["y"])
    assert got["n"]["x"] == pytest.approx(10.0, abs=1e-3)
    assert {got[i]["how"] for i in "cdn"} == {"neighbors"}
    # no neighbour at all: the fallback, near the placed points' centroid, never dropped
    assert got["lone"]["how"] == "fallback"
    assert abs(got["lone"]["x"] - 5.0) <= 0.5 and abs(got["lone"]["y"] - 2.0) <= 0.5


def test_the_latest_version_of_a_list_is_the_one_used(tmp_path):
    old = _neighbor_part(tmp_path / "g-00000001.parquet", [("c", "a", 1.0)])
    new = _neighbor_part(tmp_path / "g-00000002.parquet", [("c", "b", 1.0)])
    pos = _pos([("a", 0.0, 0.0), ("b", 10.0, 4.0)])
    out = maps.place_from_neighbors(
        duckdb.connect(), pa.table({"image_id": ["c"]}), pos, [old, new]
    ).to_pylist()
    assert (out[0]["x"], out[0]["y"]) == (10.0, 4.0)


def test_refit_threshold():
    assert maps.needs_refit(0, 0, 1)  # no map yet
    assert not maps.needs_refit(100, 0, 50)  # half of the fitted count: placed
    assert maps.needs_refit(100, 0, 51)
    assert maps.needs_refit(100, 40, 11)  # counted since the fit, over several runs
    assert not maps.needs_refit(100, 40, 10)


@pytest.mark.parametrize("n", [0, 1, 2, 10, 150])
def test_fit_layout_is_deterministic_and_finite(n):
    x = _clustered(n)
    first, second = maps.fit_layout(x), maps.fit_layout(x)
    assert first.shape == (n, 2) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_fit_layout_keeps_clusters_apart():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 32)) * 3
    labels = np.repeat(np.arange(3), 40)
    x = (centres[labels] + 0.2 * rng.normal(size=(120, 32))).astype(np.float32)
    xy = maps.fit_layout(x)
    means = np.stack([xy[labels == c].mean(0) for c in range(3)])
    nearest = np.linalg.norm(xy[:, None] - means[None], axis=-1).argmin(1)
    assert (nearest == labels).mean() > 0.95


# ------------------------------------------------------------------ a lake written directly


def _add(root, ids: list[str], vectors: np.ndarray, run: str) -> None:
    table = lake.embeddings_table(
        image_ids=ids,
        backbone=KEY.backbone,
        weights_id=KEY.weights_id,
        precision=KEY.precision,
        vectors=vectors,
        norms=np.ones(len(ids), np.float32),
        run_id=run,
    )
    lake.Lake.at(root).write_part(table, "embeddings", f"{run}.parquet")
    build_neighbor_graph(root, k=5)


def _map(root) -> dict[str, tuple]:
    rows = lake.Lake.at(root).read_table("map").to_pylist()
    latest = max(r["map_version"] for r in rows)
    return {
        r["image_id"]: (r["x"], r["y"], r["placed"], r["run_id"])
        for r in sorted(rows, key=lambda r: r["run_id"])
        if r["map_version"] == latest
    }


def _update(root, current: list[str], run: str, **kw) -> maps.MapOutcome:
    table = pa.table({"image_id": pa.array(current, pa.string())})
    return maps.update_group_map(lake.Lake.at(root), KEY, table, run, **kw)


def test_a_group_is_fitted_then_new_images_placed_then_refitted(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(150, seed=1)
    ids = _ids(0, 150)
    _add(root, ids[:100], x[:100], "run1")
    # the current collection: 99 of the embedded images and one not embedded (not mapped)
    first = _update(root, ids[1:100] + ["f" * 64], "run1", fit_sample=60)
    assert (first.action, first.map_version) == ("fit", 1)
    assert (first.n_fit, first.n_neighbors + first.n_fallback) == (60, 39)
    placed = _map(root)
    assert sorted(placed) == ids[1:100]
    assert sum(how == "fit" for _, _, how, _ in placed.values()) == 60

    # nothing new: nothing written
    assert _update(root, ids[1:100], "run2", fit_sample=60).action == "unchanged"

    _add(root, ids[100:110], x[100:110], "run3")
    third = _update(root, ids[:110], "run3", fit_sample=60)
    assert (third.action, third.map_version, third.n_neighbors + third.n_fallback) == (
        "placed",
        1,
        11,  # ids[0] joined the collection, and the 10 new ones
    )
    after = _map(root)
    assert sorted(after) == ids[:110]
    assert all(after[i] == placed[i] for i in placed)  # the others stay where they were
    assert {after[i][3] for i in ids[100:110]} == {"run3"}

    # 11 placed since a fit that wrote 99; 40 more pass half of 99: a refit, version 2
    _add(root, ids[110:150], x[110:150], "run4")
    fourth = _update(root, ids[:150], "run4", fit_sample=60)
    assert (fourth.action, fourth.map_version, fourth.n_fit) == ("fit", 2, 60)
    assert sorted(_map(root)) == ids[:150]
    # reindex's refit: a new version, even with nothing new
    assert _update(root, ids[:150], "run5", refit=True, fit_sample=60).map_version == 3


def test_the_same_lake_gives_the_same_map(tmp_path):
    x = _clustered(90, seed=2)
    maps_made = []
    for name in ("a", "b"):
        root = lake.ensure_lake(tmp_path / name)
        _add(root, _ids(0, 90), x, "run1")
        _update(root, _ids(0, 90), "run1", fit_sample=70)
        maps_made.append(_map(root))
    assert maps_made[0] == maps_made[1]
    assert graph.group_name(*KEY)  # the part names follow the graph's group names


def test_a_runs_own_files_are_the_collection_when_the_lake_has_one_source(tmp_path):
    from datetime import UTC, datetime

    from embedlake.tasks.catalog import build_catalog
    from embedlake.tasks.inventory import Inventory
    from embedlake.tasks.schemas import FILES_SCHEMA, RUNS_SCHEMA

    root = lake.Lake.at(lake.ensure_lake(tmp_path / "lake"))
    files = [
        {"run_id": "r0", "path": path, "image_id": image_id, "status": status}
        for path, image_id, status in [
            ("b.jpg", "b", "ok"),
            ("a1.jpg", "a", "ok"),
            ("a2.jpg", "a", "ok"),  # two paths, one image
            ("c.txt", "c", "error"),
            ("d.txt", None, "error"),
        ]
    ]
    root.write_part(lake.rows_to_table(files, FILES_SCHEMA), "files", "r0-000000.parquet")
    discovered = {
        "run_id": "r0",
        "stage": "discovered",
        "status": "running",
        "source": "/src",
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "files_snapshot": True,
    }
    root.write_part(lake.rows_to_table([discovered], RUNS_SCHEMA), "runs", "r0-0-d.parquet")
    build_catalog(root)
    run = Inventory("r0", 0.0, {})
    with maps.run_collection(root, "/src", run) as got:  # a new lake: no finished run yet
        batches = list(got)  # streamed, a batch at a time
    assert pa.Table.from_batches(batches).column("image_id").to_pylist() == ["a", "b"]
    finished = {**discovered, "stage": "finished", "status": "finished"}
    root.write_part(lake.rows_to_table([finished], RUNS_SCHEMA), "runs", "r0-1-finished.parquet")
    with maps.run_collection(root, "/src", run) as got:
        assert got.read_all().num_rows == 2
    # another source shares the lake: its images are current too, so the catalog is asked
    other = {**finished, "run_id": "r2", "source": "/elsewhere"}
    root.write_part(lake.rows_to_table([other], RUNS_SCHEMA), "runs", "r2-1-finished.parquet")
    assert maps.run_collection(root, "/src", run) is None
