"""The CLI in subprocesses, checked through a separate read-only DuckDB connection."""

from __future__ import annotations

import csv
import io
import json
import time

import duckdb
import pyarrow.parquet as pq
import pytest

from embedlake.flows.cli import main
from embedlake.tasks.lake import SAMPLES_FOLDER, TABLES
from tests.conftest import CLI, cli_here, run_cli

pytestmark = pytest.mark.e2e

# DESIGN.md's contract: these columns must exist (more are allowed)
CONTRACT = {
    "runs": {
        "run_id",
        "started_at",
        "finished_at",
        "status",
        "source",
        "params",
        "n_files",
        "n_ok",
        "n_error",
        "n_embedded",
        "n_skipped",
        "device",
        "precision",
        "versions",
    },
    "files": {
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
        "exif_datetime",
        "exif_make",
        "exif_model",
        "exif_orientation",
        "gps_lat",
        "gps_lon",
    },
    "images": {"path", "image_id", "status", "width", "height"},
    "embeddings": {
        "image_id",
        "backbone",
        "weights_id",
        "precision",
        "dim",
        "embedding",
        "norm",
        "run_id",
    },
    "metadata": {"path", "image_id", "label"},
}


@pytest.fixture(scope="module")
def lake_run(pipeline_lake):
    """The session's lake (every test here only reads it): its run, its folder, the env."""
    return pipeline_lake.run, pipeline_lake.path, pipeline_lake.env


def test_run_exits_zero_and_reports(lake_run):
    done, lake, _ = lake_run
    assert done.returncode == 0, done.stderr
    assert "files 9: ok 6, error 3" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.heavy  # a whole run in a subprocess, decode workers and all (~45 s)
def test_run_as_a_user_runs_it(collection, session_env, tmp_path):
    """The session lake's command in a subprocess, as a user types it (the session lake itself
    is built in the test process): exit 0, the summary on stdout, no traceback."""
    source, meta = collection
    done = run_cli(
        *("run", str(source), "--lake", str(tmp_path / "lake"), "--metadata", str(meta)),
        *("--weights", "random"),
        env=session_env,
    )
    assert done.returncode == 0, done.stderr
    assert "files 9: ok 6, error 3" in done.stdout
    assert "Traceback" not in done.stderr


def test_views_match_the_design_contract(lake_run):
    _, lake, _ = lake_run
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        for view, columns in CONTRACT.items():
            have = {row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()}
            assert columns <= have, (view, columns - have)
        statuses = dict(
            con.execute("SELECT path, coalesce(error_code, status) FROM files").fetchall()
        )
        assert statuses["broken/empty.jpg"] == "empty_file"
        assert statuses["broken/truncated.jpg"] == "truncated"
        assert statuses["broken/readme.txt"] == "not_an_image"
        assert statuses["copies/same_bytes.jpg"] == "ok"
        # identical bytes under two paths: one embedding per backbone
        counts = con.execute("""
            SELECT e.backbone, count(*) FROM embeddings e
            JOIN (SELECT DISTINCT image_id FROM files WHERE path IN
                  ('good/astronaut.jpg', 'copies/same_bytes.jpg')) USING (image_id)
            GROUP BY 1 ORDER BY 1""").fetchall()
        assert counts == [("mobilenet_v1", 1), ("xception", 1)]
        dims = con.execute("""SELECT backbone, min(dim), max(len(embedding)),
                              min(list_dot_product(embedding, embedding)),
                              max(list_dot_product(embedding, embedding))
                              FROM embeddings GROUP BY 1 ORDER BY 1""").fetchall()
        assert [d[:3] for d in dims] == [("mobilenet_v1", 1024, 1024), ("xception", 2048, 2048)]
        # unit vectors stored as float16 (the default): each value within 2**-11 of its own
        # magnitude, so the squared norm within 2 * 2**-11 + 2**-22 < 1e-3 of 1 (seen: 2.8e-4)
        assert all(abs(d[3] - 1) < 1e-3 and abs(d[4] - 1) < 1e-3 for d in dims)
        labels = con.execute("""SELECT m.label FROM files f JOIN metadata m USING (path)
                                WHERE f.path = 'copies/smaller.jpg'""").fetchall()
        assert labels == [("astronaut",)]
        joined_by_id = con.execute(
            "SELECT count(*) FROM images i JOIN metadata m USING (image_id)"
        ).fetchone()[0]
        assert joined_by_id >= 6


def test_parts_read_with_pyarrow(lake_run):
    _, lake, _ = lake_run
    parts = sorted(lake.glob("*/*.parquet"))
    # each table has at least its schema part; beside them the agreement samples (derived)
    assert {p.parent.name for p in parts} == {*TABLES, SAMPLES_FOLDER}
    rows = sum(pq.read_table(p).num_rows for p in (lake / "embeddings").glob("*.parquet"))
    assert rows == 10


def test_sql_command_formats_and_refuses_writes(lake_run):
    _, lake, env = lake_run
    out = run_cli(
        "sql",
        "SELECT backbone, count(*) AS n FROM embeddings GROUP BY 1 ORDER BY 1",
        "--lake",
        str(lake),
        "--format",
        "json",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"backbone": "mobilenet_v1", "n": 5},
        {"backbone": "xception", "n": 5},
    ]
    refused = run_cli("sql", f"COPY (SELECT 1) TO '{lake}/evil.csv'", "--lake", str(lake), env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("embedlake: error:") and len(refused.stderr.splitlines()) == 1
    assert not (lake / "evil.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "/no/such/folder", "--weights", "random"], "is not a folder"),
        (["run", "nosuchscheme://x", "--weights", "random"], "nosuchscheme"),
        (["run", ".", "--backbone", "resnet50", "--weights", "random"], "unknown backbone"),
        (["run", ".", "--weights", "/no/such/dir"], "not 'imagenet', 'random'"),
        (["sql", "SELECT 1", "--lake", "/no/such/lake"], "no catalog at"),
    ],
)
def test_bad_arguments_get_one_line_and_nonzero(args, message, cli_env, tmp_path):
    done = run_cli(*args, env=cli_env, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_imagenet_weights_unavailable_is_one_line(collection, prefect_api, tmp_path):
    source, _ = collection
    # in this process, on the session's Prefect server: the run stops when it loads the weights,
    # so a subprocess would spend its time importing torch
    done = cli_here("run", str(source), "--lake", str(tmp_path / "lake"))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("embedlake: error: ImageNet weights for") and "--weights random" in last
    assert "Traceback" not in done.stderr


def test_backbones_json_reproduces_the_papers():
    done = cli_here("backbones", "--json")  # in this process: torch is imported once
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["xception"]["params_with_classifier"] == 22_855_952
    assert round(rows["mobilenet_v1"]["params_with_classifier"] / 1e6, 1) == 4.2
    assert {
        "params",
        "macs",
        "embedding_dim",
        "input_size",
        "preprocessing",
        "pretrained_tag",
    } <= set(rows["mobilenet_v1"])


def _help(command: list[str], capsys) -> str:
    """`embedlake COMMAND --help` in this process: argparse prints and exits 0 before any
    command runs, so a subprocess would only add its start-up."""
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["run"], ["sql"], ["backbones"], ["demo"]])
def test_help_everywhere(command, capsys):
    assert "usage: embedlake" in _help(command, capsys)


def test_resized_copy_is_the_first_neighbour(lake_run):
    _, lake, env = lake_run
    out = run_cli(
        "query",
        "neighbors",
        "--param",
        "path=copies/smaller.jpg",
        "--param",
        "k=1",
        "--lake",
        str(lake),
        "--format",
        "json",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {(r["backbone"], r["neighbor_path"]) for r in rows} == {
        ("mobilenet_v1", "copies/same_bytes.jpg"),
        ("xception", "copies/same_bytes.jpg"),
    }


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO '{lake}/x.csv'",
        "SELECT * FROM read_csv('{outside}')",
        "SELECT * FROM '{outside}'",
        "ATTACH '{lake}/other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW files",
        "INSERT INTO files SELECT * FROM files",
        "EXPORT DATABASE '{lake}/dump'",
        "SELECT 1; COPY (SELECT 1) TO '{lake}/y.csv'",
        "PRAGMA enable_profiling",
        "CALL pragma_version()",
    ],
)
def test_sql_refuses_escapes_and_the_lake_survives(lake_run, statement, tmp_path):
    _, lake, _ = lake_run
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    before = sorted(p.name for p in lake.rglob("*"))
    # in this process (sql loads nothing but the catalog); test_sql_command_formats_and_refuses_
    # writes refuses a write in a subprocess, as a user runs it
    done = cli_here("sql", statement.format(lake=lake, outside=outside), "--lake", str(lake))
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("embedlake: error:") and len(done.stderr.splitlines()) == 1
    assert sorted(p.name for p in lake.rglob("*")) == before
    check = cli_here(
        "sql", "SELECT count(*) AS n FROM files", "--lake", str(lake), "--format", "csv"
    )
    assert check.returncode == 0 and check.stdout.splitlines()[1] == "9"


def test_query_command_and_queries_listing(lake_run, tmp_path):
    _, lake, env = lake_run
    listing = run_cli("queries", "--json", env=env)
    names = {q["name"] for q in json.loads(listing.stdout)}
    assert {
        "duplicates",
        "near_duplicates",
        "neighbors",
        "outliers",
        "label_purity",
        "backbone_agreement",
        "exif_summary",
        "errors_summary",
    } <= names
    out = tmp_path / "dups.parquet"
    done = run_cli(
        "query",
        "duplicates",
        "--lake",
        str(lake),
        "--format",
        "parquet",
        "--output",
        str(out),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out).to_pylist()
    assert [sorted(r["paths"]) for r in table] == [["copies/same_bytes.jpg", "good/astronaut.jpg"]]


@pytest.mark.parametrize(
    "args",
    [
        ["--debug", "sql", "SELECT 1", "--lake", "/no/such/lake"],
        ["sql", "SELECT 1", "--debug", "--lake", "/no/such/lake"],
        ["sql", "SELECT 1", "--lake", "/no/such/lake", "--debug"],
        ["query", "duplicates", "--lake", "/no/such/lake", "--debug"],
        ["run", "/no/such/folder", "--weights", "random", "--debug"],
    ],
)
def test_debug_is_accepted_anywhere_on_the_line(args, cli_env, tmp_path):
    done = run_cli(*args, env=cli_env, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "unrecognized arguments" not in done.stderr


@pytest.mark.parametrize(
    "command", ["run", "sql", "query", "queries", "report", "serve", "backbones", "demo"]
)
def test_every_command_takes_debug(command, capsys):
    assert "--debug" in _help([command], capsys)


def test_queries_takes_lake_like_every_lake_command(cli_env, tmp_path):
    plain = run_cli("queries", "--json", env=cli_env)
    with_lake = run_cli("queries", "--json", "--lake", str(tmp_path / "any"), env=cli_env)
    assert with_lake.returncode == 0, with_lake.stderr
    assert json.loads(with_lake.stdout) == json.loads(plain.stdout)
    bad = run_cli("queries", "--lake", "nosuchscheme://x", env=cli_env)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "nosuchscheme" in bad.stderr and not (tmp_path / "any").exists()


def test_output_formats_keep_duckdb_types(lake_run):
    _, lake, _ = lake_run
    as_json = cli_here(
        "sql",
        "SELECT sum(size_bytes) AS bytes, count(*) AS n FROM files",
        "--lake",
        str(lake),
        "--format",
        "json",
    )
    assert as_json.returncode == 0, as_json.stderr
    row = json.loads(as_json.stdout)
    assert isinstance(row["bytes"], int) and row["bytes"] > 0 and row["n"] == 9
    table = cli_here("sql", "SELECT path, width FROM files ORDER BY path", "--lake", str(lake))
    assert table.returncode == 0, table.stderr
    widths = dict(line.split() for line in table.stdout.splitlines()[1:-1])
    assert widths["broken/empty.jpg"] == "NULL" and widths["good/astronaut.jpg"] == "512"
    as_csv = cli_here("query", "duplicates", "--lake", str(lake), "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    (row,) = csv.DictReader(io.StringIO(as_csv.stdout))
    assert sorted(json.loads(row["paths"])) == ["copies/same_bytes.jpg", "good/astronaut.jpg"]


def test_a_runaway_query_stops_at_its_timeout(lake_run):
    _, lake, env = lake_run
    endless = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM t) SELECT count(*) FROM t"
    started = time.monotonic()
    done = run_cli("sql", endless, "--lake", str(lake), "--timeout", "2", env=env, timeout=300)
    assert time.monotonic() - started < 120  # 2 s and a start-up, on a loaded machine
    assert done.returncode == 1
    assert done.stderr.startswith("embedlake: error:") and len(done.stderr.splitlines()) == 1
    assert "--timeout 2" in done.stderr


def test_a_query_over_its_memory_limit_is_one_line(lake_run):
    _, lake, env = lake_run
    greedy = "SELECT len(list(range::VARCHAR || repeat('x', 40))) FROM range(3000000)"
    done = run_cli("sql", greedy, "--lake", str(lake), "--memory-limit", "50MB", env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("embedlake: error: Out of Memory Error")
    assert len(done.stderr.splitlines()) == 1 and "--memory-limit 50MB" in done.stderr


def test_a_query_that_spills_writes_nothing_inside_the_lake(lake_run):
    import subprocess
    import time

    _, lake, env = lake_run
    before = sorted(str(p.relative_to(lake)) for p in lake.rglob("*"))
    query = (
        "SELECT max(r) FROM "
        "(SELECT row_number() OVER (ORDER BY x DESC) AS r FROM range(20000000) t(x))"
    )
    args = ["sql", query, "--lake", str(lake), "--memory-limit", "100MB"]
    proc = subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[str] = set()
    while proc.poll() is None:  # DuckDB removes its spill files when done: look while it runs
        seen.update(str(p.relative_to(lake)) for p in lake.rglob("*"))
        time.sleep(0.02)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert sorted(seen | {str(p.relative_to(lake)) for p in lake.rglob("*")}) == before
