"""The run flow under Prefect's test harness: contract, dedup, incremental rerun, failure rows."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from embedlake.flows.pipeline import embed_collection
from embedlake.tasks.params import RunParams
from embedlake.tasks.weights import WeightsError

pytestmark = pytest.mark.flows

FAST = ["mobilenet_v1_0.25_128", "xception"]


def _params(source, lake, **extra):
    return RunParams(
        source=str(source),
        lake=str(lake),
        backbones=FAST,
        weights="random",
        workers=0,
        batch_size=4,
        **extra,
    )


def test_run_then_rerun_embeds_only_what_is_new(prefect_api, collection, tmp_path):
    source, meta = collection
    lake = tmp_path / "lake"
    first = embed_collection(_params(source, lake, metadata=str(meta)))
    assert first["status"] == "finished"
    assert first["n_files"] == 9 and first["n_error"] == 3
    assert first["error_counts"] == {"empty_file": 1, "not_an_image": 1, "truncated": 1}
    # 4 photos + the smaller copy; the byte-identical copy is embedded once
    assert first["n_embedded"] == 5 and first["n_skipped"] == 0

    second = embed_collection(_params(source, lake))
    assert (second["n_embedded"], second["n_skipped"]) == (0, 5)

    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        per_backbone = dict(
            con.execute("SELECT backbone, count(*) FROM embeddings GROUP BY 1").fetchall()
        )
        assert per_backbone == {"mobilenet_v1_0.25_128": 5, "xception": 5}
        runs = con.execute(
            "SELECT status, n_embedded, n_skipped FROM runs ORDER BY started_at"
        ).fetchall()
        assert runs == [("finished", 5, 0), ("finished", 0, 5)]
        run_ids = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM embeddings").fetchall()}
        assert run_ids == {first["run_id"]}
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 6
        dims = dict(con.execute("SELECT backbone, max(dim) FROM embeddings GROUP BY 1").fetchall())
        assert dims == {"mobilenet_v1_0.25_128": 256, "xception": 2048}


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
        assert local[key] == remote[key], key

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

    parts = sorted(
        p for p in (lake / "embeddings").glob("*.parquet") if p.name != "_schema.parquet"
    )
    parts[0].unlink()  # lose some embeddings behind the lake's back
    shutil.copy(parts[1], parts[1].with_name("copy-" + parts[1].name))  # and store some twice
    build_catalog(lake)
    with connect_read_only(lake) as con:
        results = run_checks(con)
    assert results["every_ok_image_embedded"]
    assert results["no_duplicate_embeddings"]
    assert results["consistent_dims"] == []
