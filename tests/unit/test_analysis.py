"""The neighbour graph and the named queries on synthetic embeddings with known structure."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from embedlake.tasks import lake
from embedlake.tasks.catalog import build_catalog, connect_read_only
from embedlake.tasks.neighbors import build_neighbor_graph, exact_topk, linear_cka
from embedlake.tasks.queries import QueryError, list_queries, load_query, run_query
from tests.conftest import as_written_before_scores

pytestmark = pytest.mark.unit

DIM = 64
RUN = "20260101T000000Z-000000"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def synthetic_lake(tmp_path_factory):
    """3 labelled clusters of 20, a planted near-duplicate, a planted outlier, a byte copy.

    xception's vectors are mobilenet's under a random rotation (same geometry, other basis).
    """
    rng = np.random.default_rng(7)
    centres = _unit(rng.normal(size=(3, DIM)))
    vectors, ids, labels = [], [], []
    for c, label in enumerate("ABC"):
        for i in range(20):
            vectors.append(_unit(centres[c] + 0.35 * rng.normal(size=DIM) / np.sqrt(DIM)))
            ids.append(f"{label}{i:02d}")
            labels.append(label)
    vectors.append(_unit(vectors[0] + 0.001 * rng.normal(size=DIM)))  # near-duplicate of A00
    ids.append("A00_copy")
    labels.append("A")
    outlier = rng.normal(size=DIM)
    outlier -= centres.T @ np.linalg.lstsq(centres.T, outlier, rcond=None)[0]  # away from all
    vectors.append(_unit(outlier))
    ids.append("odd")
    labels.append("Z")
    vectors = np.asarray(vectors, dtype=np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    rotated = (vectors @ rotation.T).astype(np.float32)

    root = lake.ensure_lake(tmp_path_factory.mktemp("synthetic") / "lake")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    parts = [
        lake.embeddings_table(
            image_ids=ids,
            backbone=bb,
            weights_id=f"w-{bb}",
            precision="fp32",
            vectors=v,
            norms=np.ones(len(ids), np.float32),
            run_id=RUN,
        )
        for bb, v in (("mobilenet_v1", vectors), ("xception", rotated))
    ]
    lake.write_part_atomically(pa.concat_tables(parts), root / "embeddings" / f"{RUN}-0.parquet")
    paths = {i: f"{label}/{i}.jpg" for i, label in zip(ids, labels, strict=True)}
    files = [
        {"run_id": RUN, "path": p, "image_id": i, "status": "ok", "size_bytes": 100}
        for i, p in paths.items()
    ]
    files.append(
        {
            "run_id": RUN,
            "path": "copies/A05_again.jpg",
            "image_id": "A05",
            "status": "ok",
            "size_bytes": 100,
        }
    )
    lake.write_part_atomically(
        lake.rows_to_table(files, lake.FILES_SCHEMA), root / "files" / f"{RUN}.parquet"
    )
    run = {
        "run_id": RUN,
        "stage": "finished",
        "status": "finished",
        "started_at": now,
        "finished_at": now,
        "weights": '{"mobilenet_v1": "w-mobilenet_v1", "xception": "w-xception"}',
        "precision": "fp32",
    }
    lake.write_part_atomically(
        lake.rows_to_table([run], lake.RUNS_SCHEMA), root / "runs" / f"{RUN}-1-finished.parquet"
    )
    meta = pa.table(
        {
            "path": list(paths.values()),
            "image_id": list(paths),
            "label": labels,
            "species": ["x"] * len(labels),
        }
    )
    lake.write_part_atomically(meta, root / "metadata" / f"{RUN}.parquet")
    build_neighbor_graph(root, k=5)
    build_catalog(root)
    return root


def _rows(root, name, **params):
    with connect_read_only(root) as con:
        return run_query(con, name, {k: str(v) for k, v in params.items()}).to_pylist()


def test_exact_topk_is_exact_with_any_blocking():
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(53, 16))).astype(np.float32)
    idx, sims = exact_topk(x, k=4, query_block=7, key_block=5)
    scores = x @ x.T
    np.fill_diagonal(scores, -np.inf)
    expected = np.argsort(-scores, axis=1)[:, :4]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(scores, expected, 1), rtol=1e-5)


def test_linear_cka_is_one_under_rotation_and_low_for_noise():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 12))
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, rng.normal(size=(200, 12))) < 0.2


def test_neighbors_view_shape(synthetic_lake):
    with connect_read_only(synthetic_lake) as con:
        counts = con.execute(
            "SELECT backbone, count(*), min(rank), max(rank) FROM neighbors GROUP BY 1 ORDER BY 1"
        ).fetchall()
        first = con.execute(
            "SELECT neighbor_id, similarity FROM neighbors WHERE image_id = 'A00_copy' AND rank = 1"
        ).fetchall()
    assert counts == [("mobilenet_v1", 62 * 5, 1, 5), ("xception", 62 * 5, 1, 5)]
    assert [f[0] for f in first] == ["A00", "A00"] and all(f[1] > 0.999 for f in first)


def test_near_duplicates_finds_the_planted_pair_once(synthetic_lake):
    rows = _rows(synthetic_lake, "near_duplicates", threshold=0.99)
    assert {(r["backbone"], r["path_a"], r["path_b"]) for r in rows} == {
        ("mobilenet_v1", "A/A00.jpg", "A/A00_copy.jpg"),
        ("xception", "A/A00.jpg", "A/A00_copy.jpg"),
    }
    only = _rows(synthetic_lake, "near_duplicates", threshold=0.99, backbone="xception")
    assert len(only) == 1


def test_duplicates_lists_byte_identical_paths(synthetic_lake):
    rows = _rows(synthetic_lake, "duplicates")
    assert [(r["image_id"], r["paths"]) for r in rows] == [
        ("A05", ["A/A05.jpg", "copies/A05_again.jpg"])
    ]


def test_neighbors_query_by_path_and_by_id(synthetic_lake):
    by_path = _rows(synthetic_lake, "neighbors", path="A/A00_copy.jpg", k=3)
    by_id = _rows(synthetic_lake, "neighbors", image_id="A00_copy", k=3)
    assert by_path == by_id and len(by_path) == 6
    assert [r["neighbor_path"] for r in by_path if r["rank"] == 1] == ["A/A00.jpg", "A/A00.jpg"]
    assert {r["neighbor_path"][0] for r in by_path} == {"A"}


def test_outliers_put_the_planted_one_first(synthetic_lake):
    rows = _rows(synthetic_lake, "outliers", limit=2)
    firsts = {
        r["backbone"]: r["path"]
        for r in rows
        if r["score"] == min(s["score"] for s in rows if s["backbone"] == r["backbone"])
    }
    assert firsts == {"mobilenet_v1": "Z/odd.jpg", "xception": "Z/odd.jpg"}


def test_label_purity_of_tight_clusters(synthetic_lake):
    rows = _rows(synthetic_lake, "label_purity")
    purity = {(r["backbone"], r["label"]): r["purity"] for r in rows}
    for backbone in ("mobilenet_v1", "xception"):
        for label in "ABC":
            assert purity[(backbone, label)] >= 0.95
        assert purity[(backbone, "Z")] == 0.0
    constant = _rows(synthetic_lake, "label_purity", column="species")
    assert {r["purity"] for r in constant} == {1.0}
    # a sample: the images with the smallest ids (A.., then B..), scored on their own lists
    assert _rows(synthetic_lake, "label_purity", sample=1000) == rows
    sampled = _rows(synthetic_lake, "label_purity", sample=25)
    assert {r["label"] for r in sampled} == {"A", "B"}
    assert sum(r["images"] for r in sampled) == 50  # each image once per backbone


def test_backbone_agreement_under_rotation_is_total(synthetic_lake):
    rows = _rows(synthetic_lake, "backbone_agreement", k=5)
    overall = rows[0]
    assert overall["scope"] == "overall" and overall["images"] == 62
    assert overall["overlap"] == pytest.approx(1.0)
    assert overall["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    # a sample: the images with the smallest image_ids, each with its first path
    sampled = _rows(synthetic_lake, "backbone_agreement", k=5, sample=7)
    assert sampled[0]["images"] == 7
    everyone = {r["path"] for r in rows if r["scope"] == "image"}
    chosen = [r["path"] for r in sampled if r["scope"] == "image"]
    assert len(chosen) == 7 and set(chosen) <= everyone
    with connect_read_only(synthetic_lake) as con:
        smallest = con.execute(
            "SELECT min(path) FROM images WHERE image_id IN "
            "(SELECT DISTINCT image_id FROM images ORDER BY image_id LIMIT 7) GROUP BY image_id"
        ).fetchall()
    assert sorted(chosen) == sorted(p for (p,) in smallest)


def test_an_older_version_of_the_lists_changes_no_answer(synthetic_lake, tmp_path):
    """The graph queries that read every version's rows (outliers, near-duplicates, agreement)
    keep each list's latest: an older version of every list, of random neighbours all at 0.99
    (a legacy `<group>.parquet`, version 0), changes none of their answers."""
    import shutil

    from embedlake.tasks import graph

    root = tmp_path / "lake"
    shutil.copytree(synthetic_lake, root)
    queries = {
        "outliers": {"limit": 3},
        "near_duplicates": {"threshold": 0.95},
        "backbone_agreement": {"k": 5, "sample": 20},
    }
    before = {name: _rows(root, name, **params) for name, params in queries.items()}
    with connect_read_only(root) as con:
        groups = con.sql("SELECT DISTINCT backbone, weights_id, precision FROM neighbors")
        groups = groups.fetchall()
        found = con.sql("SELECT DISTINCT image_id FROM neighbors ORDER BY 1").fetchall()
    ids = np.asarray([i for (i,) in found], object)
    rng = np.random.default_rng(1)
    for key in groups:
        neighbors = ids[rng.integers(0, len(ids), (len(ids), 5))]
        sims = np.full((len(ids), 5), 0.99, np.float32)
        name = graph._write_lists(
            lake.Lake.at(root),
            lake.GroupKey(*key),
            graph.Lists(ids, neighbors, sims),
            "exact",
        )
        as_written_before_scores(root, name, f"{graph.group_name(*key)}.parquet")
    build_catalog(root)
    with connect_read_only(root) as con:  # the old rows are there, under the current ones
        ((old,),) = con.sql("SELECT count(*) FROM neighbor_versions WHERE version = 0").fetchall()
    assert old == len(ids) * 5 * len(groups)
    after = {name: _rows(root, name, **params) for name, params in queries.items()}
    for name in queries:
        assert len(after[name]) == len(before[name]), name
        for got, expected in zip(after[name], before[name], strict=True):
            assert got == pytest.approx(expected), name


def test_every_query_has_a_header_and_runs(synthetic_lake):
    assert {
        "duplicates",
        "near_duplicates",
        "neighbors",
        "outliers",
        "label_purity",
        "backbone_agreement",
        "exif_summary",
        "errors_summary",
    } <= set(list_queries())
    for name in list_queries():
        query = load_query(name)
        assert query.description and query.example.startswith(f"embedlake query {name}")
        _rows(synthetic_lake, name)


def test_parameters_are_checked(synthetic_lake):
    with pytest.raises(QueryError, match="has no parameter nope"):
        _rows(synthetic_lake, "duplicates", nope=1)
    with pytest.raises(QueryError, match="expected INTEGER"):
        _rows(synthetic_lake, "duplicates", min_copies="many")
    with pytest.raises(QueryError, match="unknown query"):
        _rows(synthetic_lake, "../catalog/10_runs")
    # a value is bound, never spliced into the SQL
    assert _rows(synthetic_lake, "neighbors", path="x' OR '1'='1") == []


def test_report_refuses_a_crafted_run_id(tmp_path):
    from embedlake.tasks.report import build_report

    root = lake.ensure_lake(tmp_path / "lake")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    crafted = {"run_id": "../../outside", "stage": "finished", "status": "finished"}
    crafted.update(started_at=now, finished_at=now, source=str(tmp_path))
    lake.write_part_atomically(
        lake.rows_to_table([crafted], lake.RUNS_SCHEMA), root / "runs" / "x-1-finished.parquet"
    )
    build_catalog(root)
    with pytest.raises(ValueError, match="not a run id"):
        build_report(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake"]
    assert not (root / "reports").exists()


def test_embeddings_read_without_a_window_and_as_fixed_size_arrays(synthetic_lake):
    with connect_read_only(synthetic_lake) as con:
        plan = "\n".join(
            r[1] for r in con.execute("EXPLAIN SELECT count(*) FROM embeddings").fetchall()
        )
        assert "WINDOW" not in plan.upper()
        kind, cosine = con.execute(
            "SELECT typeof(embedding), array_cosine_similarity(embedding, embedding) "
            "FROM embeddings_xception LIMIT 1"
        ).fetchone()
        n = con.execute("SELECT count(*) FROM embeddings_mobilenet_v1").fetchone()[0]
    assert kind == f"FLOAT[{DIM}]" and cosine == pytest.approx(1.0, abs=1e-5)
    assert n == 62
