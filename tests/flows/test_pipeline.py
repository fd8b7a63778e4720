"""The run flow under Prefect's test harness: contract, dedup, incremental rerun, failure rows."""

from __future__ import annotations

import contextlib
import logging
import shutil

import duckdb
import pytest

from embedlake.flows.pipeline import embed_collection
from embedlake.tasks.lake import SCHEMA_PART
from embedlake.tasks.weights import WeightsError
from tests.conftest import flow_params

pytestmark = pytest.mark.flows

# two backbones, both small: the flow is the subject here (Xception runs in the session lake,
# tests/e2e/test_cli.py, and against timm in tests/unit/test_parity.py)
FAST = ["mobilenet_v1_0.25_128", "mobilenet_v1_0.5_160"]


def _params(source, lake, **extra):
    return flow_params(source, lake, backbones=FAST, batch_size=4, **extra)


@contextlib.contextmanager
def _task_log():
    """The lines the runs' tasks log at INFO and above (the session logs WARNING by default)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("prefect.task_runs")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _engine_line(summary, why: str) -> str:
    decode = "device" if summary.device.startswith("cuda") else "pillow"
    return (
        f"engine: device={summary.device} precision={summary.precision} ({why}) "
        f"decode={decode} compile=off workers=0 batch=4"
    )


def test_run_then_rerun_embeds_only_what_is_new(prefect_api, collection, tmp_path):
    source, meta = collection
    lake = tmp_path / "lake"
    with _task_log() as logged:
        first = embed_collection(_params(source, lake, metadata=str(meta)))
    # the engine plan, once: a fresh lake holds nothing, so auto measured here
    assert [line for line in logged if line.startswith("engine:")] == [
        _engine_line(first, "measured")
    ]
    assert first.status == "finished"
    assert first.n_files == 9 and first.n_error == 3
    assert first.error_counts == {"empty_file": 1, "not_an_image": 1, "truncated": 1}
    # 4 photos + the smaller copy; the byte-identical copy is embedded once
    assert first.n_embedded == 5 and first.n_skipped == 0
    # --no-report (these tests' default): the run finishes without one
    assert first.report is None and not (lake / "reports").exists()

    with _task_log() as logged:
        second = embed_collection(_params(source, lake))
    assert (second.n_embedded, second.n_skipped) == (0, 5)
    # the rerun keeps what the lake holds
    assert second.precision == first.precision
    assert [line for line in logged if line.startswith("engine:")] == [
        _engine_line(second, "lake holds")
    ]

    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        per_backbone = dict(
            con.execute("SELECT backbone, count(*) FROM embeddings GROUP BY 1").fetchall()
        )
        assert per_backbone == {"mobilenet_v1_0.25_128": 5, "mobilenet_v1_0.5_160": 5}
        runs = con.execute(
            "SELECT status, n_embedded, n_skipped FROM runs ORDER BY started_at"
        ).fetchall()
        assert runs == [("finished", 5, 0), ("finished", 0, 5)]
        run_ids = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM embeddings").fetchall()}
        assert run_ids == {first.run_id}
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 6
        dims = dict(con.execute("SELECT backbone, max(dim) FROM embeddings GROUP BY 1").fetchall())
        assert dims == {"mobilenet_v1_0.25_128": 256, "mobilenet_v1_0.5_160": 512}


def test_a_failed_run_is_recorded_and_leaves_the_lake_readable(prefect_api, collection, tmp_path):
    source, _ = collection
    lake = tmp_path / "lake"
    with pytest.raises(WeightsError):
        embed_collection(_params(source, lake).model_copy(update={"weights": "imagenet"}))
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        ((status, message),) = con.execute("SELECT status, message FROM runs").fetchall()
    assert status == "failed" and "ImageNet weights" in message


def test_fsspec_source_gives_the_same_lake_as_the_folder(prefect_api, collection, tmp_path):
    import fsspec

    source, _ = collection
    fs = fsspec.filesystem("memory")
    for path in sorted(source.rglob("*")):
        if path.is_file():
            fs.pipe(f"/embedlake-test/{path.relative_to(source).as_posix()}", path.read_bytes())
    local = embed_collection(_params(source, tmp_path / "local"))
    remote = embed_collection(
        _params("memory://embedlake-test", tmp_path / "remote").model_copy(update={"workers": 1})
    )
    for key in ("n_files", "n_ok", "n_error", "n_embedded", "error_counts"):
        assert getattr(local, key) == getattr(remote, key), key

    def lake_rows(lake):
        with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
            files = con.execute(
                "SELECT path, image_id, status, error_code FROM files ORDER BY path"
            ).fetchall()
            vectors = con.execute(
                "SELECT image_id, backbone, embedding FROM embeddings ORDER BY ALL"
            ).fetchall()
        return files, vectors

    assert lake_rows(tmp_path / "local") == lake_rows(tmp_path / "remote")


def test_checks_pass_and_catch_a_missing_embedding(prefect_api, collection, tmp_path):
    from embedlake.tasks.catalog import build_catalog, connect_read_only, run_checks

    source, _ = collection
    lake = tmp_path / "lake"
    embed_collection(_params(source, lake, part_rows=2))
    with connect_read_only(lake) as con:
        results = run_checks(con)
    assert set(results) == {"consistent_dims", "every_ok_image_embedded", "no_duplicate_embeddings"}
    assert all(rows == [] for rows in results.values()), results

    parts = sorted(p for p in (lake / "embeddings").glob("*.parquet") if p.name != SCHEMA_PART)
    parts[0].unlink()  # lose some embeddings behind the lake's back
    shutil.copy(parts[1], parts[1].with_name("copy-" + parts[1].name))  # and store some twice
    build_catalog(lake)
    with connect_read_only(lake) as con:
        results = run_checks(con)
    assert results["every_ok_image_embedded"]
    assert results["no_duplicate_embeddings"]
    assert results["consistent_dims"] == []


def _raw_runs(lake) -> list[tuple[str, str, str | None]]:
    """(stage, status, message) of every runs row as stored, sorted by stage name."""
    import pyarrow.parquet as pq

    rows = [
        r for p in sorted((lake / "runs").glob("*.parquet")) for r in pq.read_table(p).to_pylist()
    ]
    return sorted((r["stage"], r["status"], r["message"]) for r in rows)


def _count(lake, sql: str) -> int:
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchone()[0]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ("path,label\ngood/coffee.jpg,a\n../x.jpg,b\n", "escapes SOURCE"),
        ("path,label\ngood/coffee.jpg,a\n./good/coffee.jpg,b\n", "appears 2 times"),
        ("path,label\ngood/coffee.jpg,a\n,b\n", "key is empty"),
    ],
)
def test_a_bad_sidecar_fails_before_any_image_is_read(
    prefect_api, collection, tmp_path, rows, match
):
    from embedlake.tasks.metadata import MetadataError

    source, _ = collection
    lake = tmp_path / "lake"
    meta = tmp_path / "meta.csv"
    meta.write_text(rows)
    with pytest.raises(MetadataError, match=match):
        embed_collection(_params(source, lake, metadata=str(meta)))
    assert not [p for p in (lake / "files").glob("*.parquet") if p.name != SCHEMA_PART]
    assert _count(lake, "SELECT count(*) FROM embedding_rows") == 0
    ((stage, status, message),) = [r for r in _raw_runs(lake) if r[0] != "started"]
    assert (stage, status) == ("failed", "failed")
    assert message.startswith("read-sidecar: MetadataError") and match in message


def test_sidecar_rows_without_a_file_are_kept_and_counted(prefect_api, collection, tmp_path):
    source, _ = collection
    meta = tmp_path / "meta.csv"
    meta.write_text("path,label\ngood/coffee.jpg,a\nnot/there.jpg,b\n")
    summary = embed_collection(_params(source, tmp_path / "lake", metadata=str(meta)))
    assert summary.status == "finished"
    assert (summary.n_metadata_rows, summary.n_metadata_without_file) == (2, 1)


def test_a_run_failing_after_discovery_keeps_its_inventory(prefect_api, collection, tmp_path):
    source, _ = collection
    lake = tmp_path / "lake"
    with pytest.raises(WeightsError):
        embed_collection(_params(source, lake).model_copy(update={"weights": "imagenet"}))
    assert _count(lake, "SELECT count(*) FROM files") == 9
    assert _count(lake, "SELECT count(*) FROM images") == 0  # no finished run: no collection


@pytest.mark.parametrize(
    ("target", "stage"),
    [
        ("embedlake.tasks.neighbors.build_neighbor_graph", "neighbors"),
        # the report comes after 'finished': test_a_report_that_fails_leaves_the_run_finished
    ],
)
def test_a_failing_late_stage_is_recorded_once_as_failed(
    prefect_api, collection, tmp_path, monkeypatch, target, stage
):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(target, broken)
    source, _ = collection
    lake = tmp_path / "lake"
    with pytest.raises(RuntimeError, match="disk full"):
        embed_collection(_params(source, lake))
    assert _raw_runs(lake) == [
        ("discovered", "running", None),
        ("embedded", "running", None),
        ("failed", "failed", f"{stage}: RuntimeError: disk full"),
        ("started", "running", None),
    ]
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        status, n_files, message = con.execute(
            "SELECT status, n_files, message FROM runs"
        ).fetchone()
    assert (status, n_files) == ("failed", 9) and message.startswith(stage)


def test_images_is_the_current_collection_of_each_source(prefect_api, collection, tmp_path):
    source, _ = collection
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(source / "good", first)
    shutil.copytree(source / "copies", second)
    lake = tmp_path / "lake"
    embed_collection(_params(first, lake))
    embed_collection(_params(second, lake))
    query = "SELECT count(*) FROM images"
    assert _count(lake, query) == 4 + 2  # both sources, side by side
    (first / "coffee.jpg").unlink()
    embed_collection(_params(first, lake))
    assert _count(lake, query) == 3 + 2
    assert _count(lake, "SELECT count(*) FROM images WHERE path = 'coffee.jpg'") == 0
    assert _count(lake, "SELECT count(*) FROM files WHERE path = 'coffee.jpg'") == 1  # history


def test_a_source_folder_named_in_latin1_runs_and_reports(prefect_api, collection, tmp_path):
    import os

    source, _ = collection
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")  # not UTF-8: a surrogate-escaped str
    shutil.copytree(source / "good", odd)
    lake = tmp_path / "lake"
    summary = embed_collection(_params(odd, lake, no_report=False))
    assert summary.status == "finished" and summary.n_ok == 4
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        (stored,) = con.execute("SELECT source FROM runs").fetchone()
    assert stored.endswith("/caf\\xe9")
    page = (lake / "reports" / "latest" / "index.html").read_text()
    assert "thumbnail unavailable" not in page


def test_label_columns_are_probed_and_a_too_small_one_is_reported(
    prefect_api, collection, tmp_path
):
    source, meta = collection  # labels: astronaut on 2 distinct images, 3 others on 1 each
    lake = tmp_path / "lake"
    params = _params(source, lake, metadata=str(meta), label_columns=["label", "exif_model"])
    embed_collection(params)
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        rows = con.execute(
            'SELECT "column", n_images, n_classes, n_set_aside, accuracy, macs > 0 FROM probes '
            'ORDER BY "column", backbone'
        ).fetchall()
        n_predictions = con.execute("SELECT count(*) FROM predictions").fetchone()[0]
    assert rows == [("exif_model", 0, 0, 0, None, True)] * len(FAST) + [
        ("label", 2, 1, 3, None, True)
    ] * len(FAST)
    assert n_predictions == 0  # one class cannot be probed; the set-aside ones are counted


def test_a_failing_probes_stage_is_recorded_as_failed(
    prefect_api, collection, tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("no memory")

    monkeypatch.setattr("embedlake.tasks.probes.run_probes", broken)
    source, meta = collection
    lake = tmp_path / "lake"
    with pytest.raises(RuntimeError, match="no memory"):
        embed_collection(_params(source, lake, metadata=str(meta), label_columns=["label"]))
    assert ("failed", "failed", "probes: RuntimeError: no memory") in _raw_runs(lake)


def _report_of(summary) -> tuple[dict, str, str]:
    """The run's own report, as the run wrote it: summary.json, index.html, duplicates.csv."""
    import json
    from pathlib import Path

    folder = Path(summary.report).parent
    assert folder.name == summary.run_id
    return (
        json.loads((folder / "summary.json").read_text()),
        (folder / "index.html").read_text(),
        (folder / "duplicates.csv").read_text(),
    )


@pytest.mark.heavy  # two runs with their reports (the fast tier's 6-minute budget)
def test_the_runs_own_report_describes_the_collection_it_embedded(
    prefect_api, collection, tmp_path
):
    source = tmp_path / "images"
    shutil.copytree(collection[0], source)
    lake = tmp_path / "lake"
    params = _params(source, lake, no_report=False).model_copy(update={"backbones": FAST[:1]})
    first = embed_collection(params)
    summary, page, duplicates = _report_of(first)
    assert summary["status"] == "finished"
    assert "<div>status</div><div>finished</div>" in page
    # the byte-identical copy make_collection puts beside its original
    assert "copies/same_bytes.jpg|good/astronaut.jpg" in duplicates.replace('"', "")
    assert "copies/same_bytes.jpg" in page

    # a rerun that adds a copy: its report holds it, not the previous run's collection
    (source / "added").mkdir()
    shutil.copy(source / "good" / "coffee.jpg", source / "added" / "coffee_again.jpg")
    second = embed_collection(params)
    summary, page, duplicates = _report_of(second)
    assert summary["status"] == "finished" and summary["run_id"] == second.run_id
    assert "added/coffee_again.jpg|good/coffee.jpg" in duplicates.replace('"', "")
    assert "added/coffee_again.jpg" in page


@pytest.mark.heavy  # three runs, a failing one retried (the fast tier's 6-minute budget)
def test_a_catalog_that_cannot_be_built_at_the_start_fails_the_run(
    prefect_api, collection, tmp_path
):
    source, _ = collection
    lake = tmp_path / "lake"
    params = _params(source, lake).model_copy(update={"backbones": FAST[:1]})
    embed_collection(params)
    # a part that is not Parquet: every catalog build from now on fails on it
    (lake / "files_gone" / "zz-broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(duckdb.Error):
        embed_collection(params)
    rows = _raw_runs(lake)
    assert [r[:2] for r in rows].count(("finished", "finished")) == 1
    ((stage, status, message),) = [r for r in rows if r[0] == "failed"]
    assert status == "failed" and message.startswith("open-catalog: ")
    assert [r[:2] for r in rows].count(("started", "running")) == 2
