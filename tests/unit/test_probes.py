"""Linear probes, label issues and leaky splits on synthetic vectors with known structure."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from embedlake.tasks import lake, probes
from embedlake.tasks.catalog import build_catalog, connect_read_only
from embedlake.tasks.neighbors import build_neighbor_graph
from embedlake.tasks.queries import run_query

pytestmark = pytest.mark.unit

DIM = 32
RUNS = ("20260101T000000Z-000000", "20260102T000000Z-000000")
FLIPPED = {"A03", "B07", "C11", "D15"}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_plan_folds_sets_aside_singletons_and_shrinks_k():
    plan = probes.plan_folds(["a"] * 10 + ["b"] * 3 + ["c"])
    assert (plan.n_folds, plan.kept, plan.set_aside) == (3, ["a", "b"], ["c"])
    assert probes.plan_folds(["a"] * 9 + ["b"] * 7).n_folds == 5
    assert probes.plan_folds(["a", "b"]).kept == []


def test_knn_accuracy_is_the_neighbours_majority_vote():
    labels = {"x": "A", "y": "A", "z": "B", "w": "B"}
    graph = [
        ("x", "y", 1), ("x", "z", 2), ("x", "w", 3),  # B wins 2:1 -> wrong
        ("y", "x", 1), ("y", "z", 2),  # tie 1:1 -> the nearest (x, A) -> right
        ("z", "w", 1), ("z", "unlabelled", 2),  # right
    ]  # fmt: skip
    assert probes.knn_accuracy(labels, graph) == pytest.approx(2 / 3)
    assert probes.knn_accuracy(labels, []) is None


def test_a_missing_label_column_is_one_line_naming_what_exists():
    probes.check_label_columns(["label", "exif_model"], ["path", "label"])
    with pytest.raises(probes.LabelColumnError, match="--label-column specie: no such column"):
        probes.check_label_columns(["specie"], ["path", "species"])
    with pytest.raises(probes.LabelColumnError, match="no --metadata sidecar"):
        probes.check_label_columns(["label"], None)


def test_labels_of_reads_sidecar_or_files_columns():
    files = [
        {"path": "b.jpg", "image_id": "i1", "status": "ok", "exif_model": "X100"},
        {"path": "a.jpg", "image_id": "i1", "status": "ok", "exif_model": "X100"},
        {"path": "c.jpg", "image_id": "i2", "status": "ok", "exif_model": None},
        {"path": "d.jpg", "image_id": None, "status": "error", "exif_model": "Z"},
    ]
    sidecar = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "label": ["cat", "dog", ""]})
    assert probes.labels_of("label", sidecar, files) == {"i1": "cat"}  # first path wins
    assert probes.labels_of("exif_model", sidecar, files) == {"i1": "X100"}


def test_fit_probe_finds_planted_flips_on_separable_clusters():
    rng = np.random.default_rng(3)
    centres = _unit(rng.normal(size=(3, DIM)))
    vectors = np.concatenate(
        [centres[c] + 0.3 * rng.normal(size=(30, DIM)) / np.sqrt(DIM) for c in range(3)]
    )
    labels = [lab for lab in "ABC" for _ in range(30)]
    flips = [4, 35, 70]
    for i in flips:
        labels[i] = {"A": "B", "B": "C", "C": "A"}[labels[i]]
    result = probes.fit_probe(vectors, labels, n_folds=5)
    assert result.metrics["accuracy"] > 0.9 and result.metrics["chance"] == pytest.approx(1 / 3)
    assert set(np.argsort(result.label_quality)[:3]) == set(flips)
    assert set(np.flatnonzero(result.is_issue)) >= set(flips)
    assert ((result.label_quality >= 0) & (result.label_quality <= 1)).all()


@pytest.fixture(scope="module")
def probed_lake(tmp_path_factory):
    """4 clusters of 16 with 4 labels flipped, a singleton class, a split column with one
    near-duplicate across train/test; probed twice (the views must show the second run)."""
    rng = np.random.default_rng(5)
    centres = _unit(rng.normal(size=(4, DIM)))
    ids = [f"{name}{i:02d}" for name in "ABCD" for i in range(16)]
    vectors = [_unit(centres[c] + 0.35 * rng.normal(size=DIM) / np.sqrt(DIM)) for c in range(4)
               for _ in range(16)]  # fmt: skip
    labels = {i: i[0] for i in ids}
    for i in FLIPPED:
        labels[i] = {"A": "B", "B": "C", "C": "D", "D": "A"}[i[0]]
    ids.append("A_copy")  # a near-duplicate of A00, on the other side of the split
    vectors.append(_unit(vectors[0] + 0.001 * rng.normal(size=DIM)))
    labels["A_copy"] = "A"
    ids.append("lonely")
    vectors.append(_unit(rng.normal(size=DIM)))
    labels["lonely"] = "E"  # one image: set aside
    root = lake.Lake.at(tmp_path_factory.mktemp("probes") / "lake").ensure()
    table = lake.embeddings_table(
        image_ids=ids,
        backbone="mobilenet_v1",
        weights_id="w",
        precision="fp32",
        vectors=np.asarray(vectors, np.float32),
        norms=np.ones(len(ids), np.float32),
        run_id=RUNS[0],
    )
    root.write_part(table, "embeddings", f"{RUNS[0]}-0.parquet")
    paths = {i: f"{i}.jpg" for i in ids}
    files = [
        {"run_id": RUNS[1], "path": p, "image_id": i, "status": "ok"} for i, p in paths.items()
    ]
    root.write_part(lake.rows_to_table(files, lake.FILES_SCHEMA), "files", f"{RUNS[1]}.parquet")
    now = datetime(2026, 1, 2, tzinfo=UTC)
    run = {"run_id": RUNS[1], "stage": "finished", "status": "finished", "started_at": now}
    root.write_part(lake.rows_to_table([run], lake.RUNS_SCHEMA), "runs", f"{RUNS[1]}-1.parquet")
    split = {i: "test" if i == "A_copy" else "train" for i in ids}
    meta = pa.table(
        {"path": list(paths.values()), "image_id": ids, "split": [split[i] for i in ids]}
    )
    root.write_part(meta, "metadata", f"{RUNS[1]}.parquet")
    build_neighbor_graph(root, k=5)
    measure = probes.measure_backbone
    probes.measure_backbone = lambda name, device: (1000, 2.0)  # no real model for a unit test
    try:
        stale = {i: "A" for i in ids[:10]} | {i: "B" for i in ids[10:20]}
        group = lake.GroupKey("mobilenet_v1", "w", "fp32")
        probes.run_probes(root, RUNS[0], {"label": stale}, paths, [group])
        rows = probes.run_probes(root, RUNS[1], {"label": labels}, paths, [group])
    finally:
        probes.measure_backbone = measure
    build_catalog(root)
    return root, rows


def test_probe_rows_count_what_was_set_aside(probed_lake):
    _, (row,) = probed_lake
    assert row["n_images"] == 65 and row["n_classes"] == 4 and row["n_set_aside"] == 1
    assert row["set_aside_labels"] == ["E"] and row["n_folds"] == 5
    assert row["accuracy"] > 0.85 and row["chance"] == pytest.approx(17 / 65)
    assert row["knn_accuracy"] > 0.85 and (row["macs"], row["ms_per_image"]) == (1000, 2.0)


def test_views_show_the_latest_run_only(probed_lake):
    root, _ = probed_lake
    with connect_read_only(root) as con:
        for view, rows in (("probes", 1), ("predictions", 65), ("label_issues", 65)):
            got = con.execute(f"SELECT count(*), min(run_id), max(run_id) FROM {view}").fetchone()
            assert got == (rows, RUNS[1], RUNS[1]), view


def test_label_issues_query_ranks_planted_flips_first(probed_lake):
    root, _ = probed_lake
    with connect_read_only(root) as con:
        rows = run_query(con, "label_issues", {"column": "label", "limit": "4"}).to_pylist()
        assert {r["path"].removesuffix(".jpg") for r in rows} == FLIPPED
        assert all(r["is_issue"] and r["suggested_label"] == r["path"][0] for r in rows)
        assert run_query(con, "label_issues", {"column": "nothing"}).num_rows == 0


def test_leaky_splits_finds_the_near_duplicate_across_the_split(probed_lake):
    root, _ = probed_lake
    with connect_read_only(root) as con:
        rows = run_query(con, "leaky_splits", {}).to_pylist()
        assert [(r["path_a"], r["path_b"]) for r in rows] == [("A00.jpg", "A_copy.jpg")]
        assert {rows[0]["value_a"], rows[0]["value_b"]} == {"train", "test"}
        assert run_query(con, "leaky_splits", {"threshold": "1.01"}).num_rows == 0
