"""Atomic Parquet parts, stale temporaries, and the catalog rebuilt from Parquet alone."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlake.tasks import lake
from embedlake.tasks.catalog import (
    RefusedStatement,
    build_catalog,
    check_read_only,
    connect_read_only,
)

pytestmark = pytest.mark.unit


def _embedding_rows(n: int, run_id: str = "r1") -> pa.Table:
    rows = [
        {
            "image_id": f"{i:064x}",
            "backbone": "mobilenet_v1",
            "weights_id": "w",
            "precision": "fp32",
            "dim": 4,
            "embedding": [1.0, 0.0, 0.0, 0.0],
            "norm": 2.0,
            "run_id": run_id,
        }
        for i in range(n)
    ]
    return lake.rows_to_table(rows, lake.EMBEDDINGS_SCHEMA)


def test_part_appears_complete_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "part.parquet"

    def write_half_then_die(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", write_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        lake.write_part_atomically(_embedding_rows(3), target)
    assert list(tmp_path.iterdir()) == []  # neither the part nor its temporary


def test_part_round_trips(tmp_path):
    target = lake.write_part_atomically(_embedding_rows(5), tmp_path / "p.parquet")
    assert pq.read_table(target).num_rows == 5
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]


def _unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _stored(vectors: np.ndarray, storage: str, run_id: str = "r1") -> pa.Table:
    return lake.embeddings_table(
        image_ids=[f"{run_id}-{i:06d}" for i in range(len(vectors))],
        backbone="mobilenet_v1",
        weights_id="w",
        precision="fp32",
        vectors=vectors,
        norms=np.full(len(vectors), 3.0, np.float32),
        run_id=run_id,
        storage=storage,
    )


def _embedding_bytes(path) -> int:
    """Bytes of the `embedding` column chunks in a part, as written (compressed)."""
    meta = pq.ParquetFile(path).metadata
    chunks = [
        meta.row_group(g).column(c)
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    ]
    total = sum(
        c.total_compressed_size for c in chunks if c.path_in_schema.startswith("embedding.")
    )
    assert total
    return total


def test_float16_parts_hold_half_the_bytes_and_read_back_as_float32(tmp_path):
    vectors = _unit_vectors(2000, 512)
    parts = {}
    for storage in ("float16", "float32"):
        table = _stored(vectors, storage)
        value_type = pa.float16() if storage == "float16" else pa.float32()
        assert table.schema.field("embedding").type == pa.list_(value_type)
        assert table.schema.field("norm").type == pa.float32()
        parts[storage] = lake.write_part_atomically(table, tmp_path / f"{storage}.parquet")
    # zstd as the lake writes parts; random unit vectors leave it little to compress
    half = _embedding_bytes(parts["float16"]) / _embedding_bytes(parts["float32"])
    assert half <= 0.5, half
    assert parts["float16"].stat().st_size <= 0.55 * parts["float32"].stat().st_size
    for storage, path in parts.items():
        back = lake.vectors_of(pq.read_table(path))
        assert back.dtype == np.float32 and back.shape == vectors.shape
        # float16 keeps 11 significant bits: |error| <= 2**-11 * |value| <= 4.9e-4 on unit vectors
        np.testing.assert_allclose(back, vectors, rtol=0, atol=1e-3 if storage == "float16" else 0)
    with pytest.raises(ValueError, match="float16 or float32"):
        _stored(vectors[:1], "bfloat16")


def test_float16_and_float32_parts_read_together_as_float32(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    old, new = _unit_vectors(30, 16, seed=1), _unit_vectors(20, 16, seed=2)
    lake.write_part_atomically(_stored(old, "float32", "r1"), root / "embeddings" / "r1.parquet")
    lake.write_part_atomically(_stored(new, "float16", "r2"), root / "embeddings" / "r2.parquet")
    table = lake.Lake.at(root).read_table("embeddings")
    assert table.schema == lake.EMBEDDINGS_SCHEMA and table.num_rows == 50
    by_run = {
        r: lake.vectors_of(table.filter(pa.compute.equal(table["run_id"], r))) for r in ("r1", "r2")
    }
    np.testing.assert_array_equal(by_run["r1"], old)
    np.testing.assert_allclose(by_run["r2"], new, rtol=0, atol=1e-3)
    build_catalog(root)
    with connect_read_only(root) as con:
        kinds = con.execute("SELECT DISTINCT typeof(embedding) FROM embeddings").fetchall()
        rows = con.execute(
            "SELECT run_id, embedding FROM embeddings ORDER BY run_id, image_id"
        ).fetchall()
        fixed = con.execute("SELECT DISTINCT typeof(embedding) FROM embeddings_mobilenet_v1")
        fixed = fixed.fetchall()
    assert kinds == [("FLOAT[]",)] and fixed == [("FLOAT[16]",)]
    stored = np.array([r[1] for r in rows], np.float32)
    np.testing.assert_array_equal(stored[:30], old)
    np.testing.assert_allclose(stored[30:], new, rtol=0, atol=1e-3)


def test_stale_temporaries_are_removed_and_never_read(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    stale = root / "embeddings" / "r0-000000.parquet.tmp-999-abc"
    stale.write_bytes(b"half written")
    assert lake.Lake.at(root).read_table("embeddings").num_rows == 0
    assert lake.Lake.at(root).remove_stale_temporaries() == [stale]
    assert not stale.exists()


def test_catalog_is_rebuilt_from_parquet_alone(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    lake.write_part_atomically(_embedding_rows(7), root / "embeddings" / "r1-000000.parquet")
    build_catalog(root)
    (root / "catalog.duckdb").unlink()
    build_catalog(root)
    with duckdb.connect(str(root / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 7
        views = {
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
    assert {"runs", "files", "images", "embeddings", "metadata"} <= views
    assert not list(root.glob("catalog.duckdb.tmp*"))


def test_empty_lake_has_every_view_with_its_columns(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    build_catalog(root)
    with connect_read_only(root) as con:
        cols = {r[0] for r in con.execute("DESCRIBE files").fetchall()}
        assert {
            "run_id",
            "path",
            "size_bytes",
            "mtime",
            "image_id",
            "status",
            "error_code",
            "error_message",
            "format",
            "width",
            "height",
            "mode",
            "gps_lat",
            "gps_lon",
        } <= cols
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 0


def test_read_connections_refuse_writes_and_outside_reads(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    build_catalog(root)
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with connect_read_only(root) as con:
        for statement in (
            f"COPY (SELECT 1) TO '{root}/x.csv'",
            "CREATE TABLE t (a INT)",
            "ATTACH ':memory:' AS m",
            "INSTALL httpfs",
            "SET threads = 1",
        ):
            with pytest.raises(RefusedStatement):
                check_read_only(con, statement)
        with pytest.raises(duckdb.Error, match="Permission|disabled"):
            con.execute(f"SELECT * FROM read_csv('{outside}')").fetchall()
    assert not (root / "x.csv").exists()


def test_put_on_s3_is_one_whole_object_or_none(s3_env, tmp_path, monkeypatch):
    from tests.conftest import s3_filesystem

    fs = s3_filesystem(s3_env)
    fs.mkdir("put-test")
    staging = tmp_path / "staging"
    staging.mkdir()
    target = "put-test/lake/embeddings/p.parquet"
    lake.put_part_atomically(_embedding_rows(5), fs, target, staging, object_store=True)
    assert pq.read_table(target, filesystem=fs).num_rows == 5
    assert list(staging.iterdir()) == []

    def upload_dies(*args, **kwargs):
        raise ConnectionError("network gone")

    broken = "put-test/lake/embeddings/q.parquet"
    monkeypatch.setattr(fs, "put_file", upload_dies)
    with pytest.raises(ConnectionError):
        lake.put_part_atomically(_embedding_rows(3), fs, broken, staging, object_store=True)
    assert not fs.exists(broken)
    assert list(staging.iterdir()) == []  # the staged file is gone too
    assert fs.find("put-test/lake") == [target]


def test_url_lake_read_connections_refuse_writes_and_outside_reads(s3_env, tmp_path):
    from tests.conftest import s3_filesystem

    fs = s3_filesystem(s3_env)
    fs.mkdir("ro-test")
    fs.pipe("ro-test/lake-other/x.parquet", b"")  # a sibling prefix that starts like the lake
    fs.pipe("ro-test/lake/x.csv", b"a\n1\n")  # inside the lake
    root = lake.Lake.at("s3://ro-test/lake").ensure()
    lake.write_part_atomically(_embedding_rows(2), tmp_path / "local.parquet")
    fs.put_file(str(tmp_path / "local.parquet"), "ro-test/lake-other/x.parquet")
    build_catalog(root)
    assert root.catalog_file.is_file() and str(root.catalog_file).startswith(str(tmp_path))
    assert not fs.exists("ro-test/lake/catalog.duckdb")
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with connect_read_only("s3://ro-test/lake") as con:
        assert con.execute("SELECT count(*) FROM read_csv('s3://ro-test/lake/x.csv')").fetchone()
        for statement in (
            "COPY (SELECT 1) TO 's3://ro-test/lake/x2.csv'",
            "CREATE TABLE t (a INT)",
            "INSTALL httpfs",
            "SET allowed_directories = ['s3://']",
        ):
            with pytest.raises(RefusedStatement):
                check_read_only(con, statement)
        for escape in (
            f"SELECT * FROM read_csv('{outside}')",
            "SELECT * FROM read_parquet('s3://ro-test/lake-other/x.parquet')",
            "SELECT * FROM read_parquet('s3://ro-test/lake/../lake-other/x.parquet')",
            "SELECT * FROM read_parquet('s3://other-bucket/x.parquet')",
        ):
            with pytest.raises(duckdb.Error, match="Permission|disabled"):
                con.execute(escape).fetchall()
    assert not fs.exists("ro-test/lake/x2.csv")


def test_a_reader_rebuilding_a_url_lakes_catalog_writes_nothing_to_the_lake(s3_env):
    from tests.conftest import s3_filesystem

    fs = s3_filesystem(s3_env)
    fs.mkdir("old-lake")
    root = lake.Lake.at("s3://old-lake/lake").ensure()
    fs.rm("old-lake/lake/agreement/_schema.parquet")  # as a lake made before that table
    before = sorted(fs.find("old-lake"))
    with pytest.raises(FileNotFoundError, match="no agreement table yet"):
        connect_read_only(root)
    assert sorted(fs.find("old-lake")) == before
    build_catalog(root)  # a writer (a run) adds the missing schema part
    with connect_read_only(root) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    # a cached catalog built by another embedlake version (other catalog SQL) is rebuilt
    version = root.catalog_file.with_name("catalog.duckdb.version")
    current = version.read_text()
    version.write_text("an older embedlake")
    with connect_read_only(root) as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
    assert version.read_text() == current


def test_a_lake_url_without_its_backend_is_one_clear_error():
    with pytest.raises(ValueError, match="lake nosuchscheme://x: Protocol not known"):
        lake.Lake.at("nosuchscheme://x")
