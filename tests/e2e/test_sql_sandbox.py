"""`embedlake sql` writes nothing, whatever the statement: every DuckDB statement kind that writes
or changes settings, bare and inside EXPLAIN / EXPLAIN ANALYZE, on a local and an S3 lake.

Each lake is built once (real Parquet parts and a real catalog, no pipeline needed). Every
statement goes through `check_read_only` in-process; the worst of them also run straight on the
read connection, past the check, to show that the connection has nothing to write through; a
few go through the CLI as a user types them. Afterwards the lake (listing, sizes, SHA-256) is as
it was and the folder they aim at outside it is empty.
"""

from __future__ import annotations

import hashlib
import os

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from embedlake.tasks import lake
from embedlake.tasks.catalog import (
    RefusedStatement,
    build_catalog,
    check_read_only,
    connect_read_only,
)
from tests.conftest import cli_here, s3_filesystem

pytestmark = pytest.mark.e2e

BUCKET = "embedlake-sandbox"
URL = f"s3://{BUCKET}/lake"
PART = "r1-000000.parquet"

# Every kind of statement DuckDB has that writes a file, changes the catalog, the settings or the
# session. {lake}: the lake as the read connection's views reach it; {outside}: a folder that
# must stay empty.
WRITES = [
    f"COPY (SELECT 1 AS x) TO '{{lake}}/embeddings/{PART}' (FORMAT parquet)",
    "COPY (SELECT 1 AS x) TO '{lake}/runs/new.parquet' (FORMAT parquet)",
    "COPY embeddings TO '{outside}/copy.csv'",
    "COPY runs FROM '{outside}/in.csv'",
    "COPY FROM DATABASE catalog TO memory",
    "EXPORT DATABASE '{outside}/export'",
    "EXPORT DATABASE '{lake}/export'",
    "IMPORT DATABASE '{outside}/export'",
    "ATTACH '{outside}/new.duckdb' AS fresh",
    "ATTACH '{lake}/new.duckdb' AS fresh",
    "ATTACH ':memory:' AS scratch",
    "DETACH catalog",
    "USE memory",
    "CREATE TABLE t AS SELECT 1 AS a",
    "CREATE TEMP TABLE t AS SELECT 1 AS a",
    "CREATE VIEW v AS SELECT 1 AS a",
    "CREATE MACRO m() AS 1",
    "CREATE TYPE mood AS ENUM ('a')",
    "CREATE SEQUENCE seq",
    "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
    "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
    "DROP SECRET s",
    "DROP VIEW runs",
    "ALTER VIEW runs RENAME TO r",
    "COMMENT ON VIEW runs IS 'x'",
    "INSERT INTO runs SELECT * FROM runs",
    "UPDATE runs SET status = 'x'",
    "DELETE FROM runs",
    "MERGE INTO runs USING runs AS s ON (runs.run_id = s.run_id) WHEN MATCHED THEN DELETE",
    "INSTALL httpfs",
    "FORCE INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '{outside}/x.duckdb_extension'",
    "UPDATE EXTENSIONS",
    "SET threads = 1",
    "SET allowed_directories = ['/']",
    "SET enable_external_access = true",
    "SET GLOBAL memory_limit = '1GB'",
    "RESET memory_limit",
    "SET VARIABLE embedlake_lake = '/'",
    "RESET VARIABLE embedlake_lake",
    "PRAGMA enable_profiling",
    "PRAGMA threads = 1",
    "CALL checkpoint()",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "ANALYZE",
    "BEGIN TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DEALLOCATE p",
    "PIVOT runs ON status",
]
WRAPPERS = ["{}", "EXPLAIN {}", "EXPLAIN ANALYZE {}", "EXPLAIN (ANALYZE) {}"]
# past the check, straight on the read connection: what would write if a statement got by
WORST = [WRITES[0], WRITES[1], WRITES[2], WRITES[5], WRITES[6], WRITES[8], WRITES[9]]


def _embeddings(n: int, seed: int) -> pa.Table:
    vectors = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return lake.embeddings_table(
        image_ids=[hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)],
        backbone="mobilenet_v1",
        weights_id="w",
        precision="fp32",
        vectors=vectors,
        norms=np.ones(n, np.float32),
        run_id="r1",
    )


def fill_lake(root: lake.Lake) -> None:
    """Two embeddings parts and a sidecar part in a new lake, and its catalog."""
    root.ensure()
    root.write_part(_embeddings(5, 1), "embeddings", PART)
    root.write_part(_embeddings(3, 2), "embeddings", "r1-000001.parquet")
    sidecar = pa.table({"path": ["a.jpg"], "image_id": ["0" * 64], "label": ["cat"]})
    root.write_part(sidecar, "metadata", "r1.parquet")
    build_catalog(root)


def _local_snapshot(folder) -> dict[str, tuple[int, str]]:
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                data = handle.read()
            found[os.path.relpath(path, folder)] = (len(data), hashlib.sha256(data).hexdigest())
    return found


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory):
    work = tmp_path_factory.mktemp("sandbox")
    root = lake.Lake.at(work / "lake")
    fill_lake(root)
    (work / "outside").mkdir()
    return {
        "root": root,
        "outside": work / "outside",
        "snapshot": lambda: _local_snapshot(work / "lake"),
        "env": {},
    }


@pytest.fixture(scope="module")
def s3_lake(s3_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("sandbox-s3")
    env = {**s3_server, "EMBEDLAKE_CACHE": str(work / "cache")}
    fs = s3_filesystem(s3_server)
    fs.mkdir(BUCKET)

    def snapshot():
        fs.invalidate_cache()
        return {p: (fs.size(p), hashlib.sha256(fs.cat(p)).hexdigest()) for p in fs.find(BUCKET)}

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        fill_lake(lake.Lake.at(URL))
        (work / "outside").mkdir()
        yield {
            "root": lake.Lake.at(URL),
            "outside": work / "outside",
            "snapshot": snapshot,
            "env": env,
        }


@pytest.fixture(params=["local", "s3"])
def any_lake(request):
    return request.getfixturevalue(f"{request.param}_lake")


def _fill(statement: str, where: dict, location: str) -> str:
    return statement.format(lake=location, outside=where["outside"])


def test_every_writing_statement_is_refused_in_one_line(any_lake):
    before = any_lake["snapshot"]()
    with connect_read_only(any_lake["root"]) as con:
        location = con.execute("SELECT getvariable('embedlake_lake')").fetchone()[0]
        for statement in WRITES:
            for wrapper in WRAPPERS:
                text = wrapper.format(_fill(statement, any_lake, location))
                with pytest.raises(RefusedStatement) as refused:
                    check_read_only(con, text)
                assert "\n" not in str(refused.value).strip(), text
            # a comment, a harmless first statement or a second EXPLAIN hide nothing
            text = _fill(statement, any_lake, location)
            for hidden in (
                f"/* EXPLAIN */ EXPLAIN -- SELECT\n ANALYZE {text}",
                f"SELECT 1; {text}",
                f"EXPLAIN ANALYZE SELECT 1; EXPLAIN ANALYZE {text}",
            ):
                with pytest.raises(RefusedStatement):
                    check_read_only(con, hidden)
        for reading in (
            "SELECT count(*) FROM embeddings",
            "EXPLAIN SELECT count(*) FROM embeddings",
            "EXPLAIN ANALYZE SELECT count(*) FROM embeddings",
            "EXPLAIN (FORMAT json) SELECT 1",
            "/* c */ EXPLAIN -- c\n ANALYZE FROM runs",
            "DESCRIBE embeddings",
            "SUMMARIZE SELECT dim FROM embeddings",
        ):
            for statement in check_read_only(con, reading):
                con.execute(statement).fetchall()
    assert any_lake["snapshot"]() == before
    assert list(any_lake["outside"].iterdir()) == []


@pytest.mark.parametrize("statement", WORST)
def test_the_read_connection_has_nothing_to_write_through(any_lake, statement):
    """Past the check, a write fails (bare, and inside EXPLAIN ANALYZE where DuckDB parses
    that), and nothing changes anywhere."""
    before = any_lake["snapshot"]()
    with connect_read_only(any_lake["root"]) as con:
        location = con.execute("SELECT getvariable('embedlake_lake')").fetchone()[0]
        for named in (location, any_lake["root"].url):  # as the views reach it, and by its name
            for wrapper in ("{}", "EXPLAIN ANALYZE {}"):
                with pytest.raises(duckdb.Error):
                    con.execute(wrapper.format(_fill(statement, any_lake, named))).fetchall()
    assert any_lake["snapshot"]() == before
    assert list(any_lake["outside"].iterdir()) == []


def test_the_cli_refuses_the_reported_overwrite_in_one_line(any_lake, monkeypatch):
    """Through the CLI's main in this process (`cli_here`: its parsing, one-line errors and exit
    status; the subprocess guards of the reading commands are tests/e2e/test_hostile_lake.py's)."""
    root = any_lake["root"]
    monkeypatch.delenv("EMBEDLAKE_LAKE", raising=False)
    for name, value in any_lake["env"].items():
        monkeypatch.setenv(name, value)
    before = any_lake["snapshot"]()
    for attack in (
        f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{root.location('embeddings', PART)}' "
        "(FORMAT parquet)",
        f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{any_lake['outside']}/x.parquet'",
        "EXPLAIN ANALYZE INSTALL httpfs",
    ):
        done = cli_here("sql", attack, "--lake", root.url)
        assert done.returncode == 1, done.stdout
        assert done.stderr.startswith("embedlake: error: only SELECT"), done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
    count = "SELECT count(*) AS n FROM embeddings"
    done = cli_here("sql", count, "--lake", root.url, "--format", "csv")
    assert done.returncode == 0 and done.stdout.split() == ['"n"', "8"], done.stderr
    assert any_lake["snapshot"]() == before
    assert list(any_lake["outside"].iterdir()) == []
