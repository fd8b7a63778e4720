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


def test_distinct_keys_are_those_of_every_part_read_whole(tmp_path):
    """`Lake.distinct` reads batch by batch; its keys are the whole table's, each once."""
    root = lake.Lake.at(tmp_path / "lake").ensure()
    assert root.distinct("embeddings", ["backbone", "precision"]) == []
    parts = {
        "r1": _stored(_unit_vectors(30, 16, seed=1), "float16", "r1"),
        "r2": pa.concat_tables(
            [
                _stored(_unit_vectors(5, 16, seed=2), "float16", "r2"),
                lake.embeddings_table(
                    image_ids=["x"],
                    backbone="xception",
                    weights_id="v",
                    precision="bf16",
                    vectors=_unit_vectors(1, 16, seed=3),
                    norms=np.ones(1, np.float32),
                    run_id="r2",
                ),
            ]
        ),
    }
    for name, part in parts.items():
        root.write_part(part, "embeddings", f"{name}.parquet")
    columns = ["backbone", "weights_id", "precision"]
    whole = root.read_table("embeddings", columns).group_by(columns).aggregate([]).to_pylist()
    found = root.distinct("embeddings", columns)
    assert len(found) == 2 and sorted(found, key=repr) == sorted(whole, key=repr)
    assert lake.stored_precisions(root, {"mobilenet_v1": "w", "xception": "v"}) == {
        "fp32",
        "bf16",
    }
    assert lake.stored_precisions(root, {"mobilenet_v1": "other"}) == set()


def test_stale_temporaries_are_removed_and_never_read(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    stale = root / "embeddings" / "r0-000000.parquet.tmp-999-abc123"
    stale.write_bytes(b"half written")
    assert lake.Lake.at(root).read_table("embeddings").num_rows == 0
    assert lake.Lake.at(root).remove_stale_temporaries() == [stale]
    assert not stale.exists()


def _a_lake_with_a_run(path):
    root = lake.Lake.at(path).ensure()
    row = lake.rows_to_table([{"run_id": "r0", "stage": "started"}], lake.RUNS_SCHEMA)
    root.write_part(row, "runs", "r0-0-started.parquet")
    return root


def test_only_temporaries_embedlake_wrote_are_removed(tmp_path):
    """`run` deleted every file under --lake with `.tmp-` in its name: a user's notes too."""
    root = _a_lake_with_a_run(tmp_path / "lake")
    group = root.path / "index" / "mobilenet_v1-fp32-0123456789ab"
    group.mkdir(parents=True)
    ours = [
        root.path / "embeddings" / "r1-000000.parquet.tmp-4242-0a1b2c",
        root.path / "runs" / "r1-0-started.parquet.tmp-17-ffffff",
        group / "seg-000003-abcdef.faiss.tmp-99-123abc",
        group / "seg-000003-abcdef.parquet.tmp-99-123abc",
        group / "manifest.json.tmp-99-c0ffee",
        root.path / "catalog.duckdb.tmp-31337",
        root.path / "catalog.duckdb.tmp-31337.wal",
    ]
    theirs = [
        root.path / "notes.tmp-1.txt",
        root.path / "embeddings" / "notes.tmp-1.txt",
        root.path / "embeddings" / "draft.parquet.tmp-mine",
        root.path / "reports" / "r0" / "x.parquet.tmp-1-abcdef",  # not a table folder
        root.path / "mine" / "a.parquet.tmp-1-abcdef",
    ]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert sorted(root.remove_stale_temporaries()) == sorted(ours)
    assert [p for p in ours if p.exists()] == []
    assert [p for p in theirs if not p.exists()] == []


def test_a_url_lakes_cleanup_spares_what_it_did_not_write(tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("EMBEDLAKE_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    base = f"/{tmp_path.name}/lake"
    root = _a_lake_with_a_run(f"memory://{base}")
    ours = [
        f"{base}/files/r1-000001.parquet.tmp-8-abcdef",
        f"{base}/index/g/seg-000001-abcdef.faiss.tmp-1-aaaaaa",
    ]
    theirs = [f"{base}/notes.tmp-1.txt", f"{base}/files/notes.tmp-1.txt", f"{base}/x/a.tmp-1"]
    for path in ours + theirs:
        fs.pipe_file(path, b"x")
    assert len(root.remove_stale_temporaries()) == len(ours)
    assert [p for p in ours if fs.exists(p)] == []
    assert [p for p in theirs if not fs.exists(p)] == []


def test_a_folder_that_is_not_a_lake_is_refused_by_writers(tmp_path):
    """A non-empty folder without a runs table is not made a lake (nor cleaned); a new, an empty
    or a half-created folder is, and so is a lake with a user's files beside its tables."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.tmp-1.txt").write_text("mine")
    before = sorted(folder.rglob("*"))
    with pytest.raises(lake.NotALake, match="not an embedlake lake"):
        lake.Lake.at(folder).ensure()
    with pytest.raises(lake.NotALake), lake.Lake.at(folder).lock():
        pass
    assert sorted(folder.rglob("*")) == before
    lake.Lake.at(tmp_path / "new").ensure()
    (tmp_path / "empty").mkdir()
    lake.Lake.at(tmp_path / "empty").ensure()
    (tmp_path / "cut-short" / "runs").mkdir(parents=True)
    (tmp_path / "cut-short" / "files").mkdir()
    lake.Lake.at(tmp_path / "cut-short").ensure()
    root = _a_lake_with_a_run(tmp_path / "lake")
    (root.path / "notes.txt").write_text("mine")
    with root.lock():
        root.ensure()


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
    root = lake.Lake.at("s3://ro-test/lake").ensure()
    fs.pipe("ro-test/lake/x.csv", b"a\n1\n")  # inside the lake
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
    fs.rm(f"old-lake/lake/agreement/{lake.SCHEMA_PART}")  # as a lake made before that table
    before = sorted(fs.find("old-lake"))
    with connect_read_only(root) as con:  # the table it lacks reads as empty
        assert con.execute("SELECT count(*) FROM backbone_cka").fetchone() == (0,)
    assert sorted(fs.find("old-lake")) == before
    root.catalog_file.unlink()
    build_catalog(root)  # a writer (a run) adds the missing schema part
    assert fs.exists(f"old-lake/lake/agreement/{lake.SCHEMA_PART}")
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


# ------------------------------------------------- one writer at a time on an S3 lake, any cache


def _s3_lake(s3_env, bucket):
    from tests.conftest import s3_filesystem

    fs = s3_filesystem(s3_env)
    fs.mkdir(bucket)
    return fs, f"s3://{bucket}/lake"


def _writer_in_a_thread(root, on_wait):
    import threading

    holding, done = threading.Event(), threading.Event()

    def write():
        with root.lock(on_wait=on_wait):
            holding.set()
            done.wait(60)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return holding, done, thread


def test_two_caches_writing_one_s3_lake_take_turns(s3_env, tmp_path, monkeypatch):
    """The lock was a file in each machine's cache: a writer with another cache (another
    machine) went ahead and marked the first one's live run aborted."""
    fs, url = _s3_lake(s3_env, "lock-turns")
    monkeypatch.setattr(lake.UrlLake, "LOCK_POLL_S", 0.05)
    monkeypatch.setattr(lake.UrlLake, "LOCK_HEARTBEAT_S", 0.1)
    monkeypatch.setattr(lake.UrlLake, "LOCK_EXPIRY_S", 1.0)
    monkeypatch.setenv("EMBEDLAKE_CACHE", str(tmp_path / "cache-1"))
    first = lake.Lake.at(url).ensure()
    told = []
    with first.lock():
        monkeypatch.setenv("EMBEDLAKE_CACHE", str(tmp_path / "cache-2"))
        second = lake.Lake.at(url)
        holding, done, thread = _writer_in_a_thread(second, told.append)
        # three expiries: the first's heartbeat keeps its lock, the second keeps waiting
        assert not holding.wait(3.0)
        assert told and "waiting for it to finish" in told[0] and "pid" in told[0]
    assert holding.wait(30)  # released: the second goes ahead
    done.set()
    thread.join(30)
    assert not fs.exists("lock-turns/lake/.lock")


def test_a_dead_writers_s3_lock_is_taken_over_after_its_expiry(s3_env, monkeypatch):
    fs, url = _s3_lake(s3_env, "lock-dead")
    monkeypatch.setattr(lake.UrlLake, "LOCK_POLL_S", 0.05)
    monkeypatch.setattr(lake.UrlLake, "LOCK_EXPIRY_S", 0.5)
    root = lake.Lake.at(url).ensure()
    fs.pipe("lock-dead/lake/.lock", b'{"holder": "a killed run"}')  # never refreshed
    told = []
    with root.lock(on_wait=told.append):
        assert "a killed run" in told[0]
        assert b"a killed run" not in fs.cat_file("lock-dead/lake/.lock")
    assert not fs.exists("lock-dead/lake/.lock")


def test_a_writer_whose_s3_lock_was_taken_over_says_so(s3_env, monkeypatch):
    import threading
    import time

    fs, url = _s3_lake(s3_env, "lock-lost")
    monkeypatch.setattr(lake.UrlLake, "LOCK_HEARTBEAT_S", 0.05)
    root = lake.Lake.at(url).ensure()
    with pytest.raises(RuntimeError, match="lost its lock"), root.lock():
        fs.pipe("lock-lost/lake/.lock", b'{"holder": "a writer that took over"}')
        # the heartbeat thread ends when it finds the lock taken: wait for that, not a fixed
        # second that a loaded machine can overrun
        deadline = time.monotonic() + 60
        while any(t.name == "lake-lock" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the heartbeat never saw the lock taken"
            time.sleep(0.05)
    assert fs.exists("lock-lost/lake/.lock")  # the other's lock is left alone
