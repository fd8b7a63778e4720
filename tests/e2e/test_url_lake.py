"""A lake on S3 (s3fs against moto's S3 server): the same lake as a local one, exactly once on
rerun, and `sql` / `query` that read it and nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedlake.tasks.lake import Lake
from tests.conftest import run_cli, s3_filesystem

pytestmark = pytest.mark.e2e

BUCKET = "embedlake-e2e"
URL = f"s3://{BUCKET}/lake"


@pytest.fixture(scope="module")
def runs(pipeline_lake, collection, tmp_path_factory, session_env, s3_server):
    """The session's local lake (the same command), a run into the S3 lake, and a rerun of it,
    on the same collection."""
    source, meta = collection
    work = tmp_path_factory.mktemp("url-lake")
    env = dict(session_env, EMBEDLAKE_CACHE=str(work / "cache"))
    env.update(s3_server)
    # --precision auto is measured once per cache: the S3 runs take the local run's measurement,
    # so a timing difference cannot give the two lakes different precisions
    measured = Path(session_env["EMBEDLAKE_CACHE"]) / "precision.json"
    if measured.is_file():
        (work / "cache").mkdir()
        shutil.copy(measured, work / "cache" / "precision.json")
    s3_filesystem(s3_server).mkdir(BUCKET)
    common = ["--weights", "random", "--metadata", str(meta)]
    first = run_cli("run", str(source), "--lake", URL, *common, env=env)
    again = run_cli("run", str(source), "--lake", URL, *common, env=env)
    return {
        "local": pipeline_lake.run,
        "local_lake": pipeline_lake.path,
        "first": first,
        "again": again,
        "env": env,
        "work": work,
    }


def _files(lake, run_id):
    rows = lake.read_table("files").to_pylist()
    keep = ("path", "image_id", "status", "error_code", "size_bytes", "format", "width", "height")
    return sorted(tuple(r[k] for k in keep) for r in rows if r["run_id"] == run_id)


def _run_ids(lake):
    return sorted({r["run_id"] for r in lake.read_table("runs").to_pylist()})


@pytest.mark.heavy  # runs: two runs into the S3 lake (a minute)
def test_s3_lake_equals_the_local_lake(runs, s3_env):
    for name in ("local", "first", "again"):
        assert runs[name].returncode == 0, runs[name].stderr
    local, remote = Lake.at(runs["local_lake"]), Lake.at(URL)
    assert _files(remote, _run_ids(remote)[0]) == _files(local, _run_ids(local)[0])
    key = ("image_id", "backbone", "weights_id", "precision", "dim")

    def embeddings(lake):
        rows = sorted(lake.read_table("embeddings").to_pylist(), key=lambda r: [r[k] for k in key])
        return [tuple(r[k] for k in key) for r in rows], [r["embedding"] for r in rows]

    (local_keys, local_vectors), (s3_keys, s3_vectors) = embeddings(local), embeddings(remote)
    assert s3_keys == local_keys and len(s3_keys) == 10
    for a, b in zip(s3_vectors, local_vectors, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # on the bucket: parts and the uploaded report only; the catalog is in the local cache
    fs = s3_filesystem(s3_env)
    stored = [p.removeprefix(f"{BUCKET}/lake/") for p in fs.find(f"{BUCKET}/lake")]
    assert not [p for p in stored if ".tmp-" in p or p.endswith(".duckdb")]
    assert f"reports/{_run_ids(remote)[-1]}/index.html" in stored
    # (this process's cache is another folder; the runs used theirs, named by the URL's hash)
    assert (runs["work"] / "cache" / "lakes" / remote.local_dir.name / "catalog.duckdb").is_file()


@pytest.mark.heavy  # runs: two runs into the S3 lake (a minute)
def test_rerun_embeds_nothing_new_and_duplicates_nothing(runs):
    assert "embedded 0, already in the lake 5" in runs["again"].stdout, runs["again"].stdout
    out = run_cli(
        "sql",
        "SELECT (SELECT count(*) FROM embedding_rows) AS stored, "
        "(SELECT count(*) FROM embeddings) AS distinct_keys, "
        "(SELECT count(*) FROM runs WHERE status = 'finished') AS finished",
        "--lake",
        URL,
        "--format",
        "json",
        env=runs["env"],
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"stored": 10, "distinct_keys": 10, "finished": 2}


@pytest.mark.heavy  # runs: two runs into the S3 lake (a minute)
def test_sql_and_query_read_the_s3_lake_with_a_rebuilt_catalog(runs):
    env = runs["env"]
    catalogs = list((runs["work"] / "cache" / "lakes").glob("*/catalog.duckdb"))
    assert len(catalogs) == 1
    catalogs[0].unlink()  # the catalog is a cache: the next reader rebuilds it from the Parquet
    done = run_cli("query", "duplicates", "--lake", URL, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["paths"]) == [
        "copies/same_bytes.jpg",
        "good/astronaut.jpg",
    ]
    labels = run_cli(
        "sql",
        "SELECT m.label FROM images i JOIN metadata m USING (path) "
        "WHERE i.path = 'copies/smaller.jpg'",
        "--lake",
        URL,
        "--format",
        "csv",
        env=env,
    )
    assert labels.returncode == 0 and labels.stdout.split() == ['"label"', '"astronaut"']


@pytest.mark.heavy  # runs: two runs into the S3 lake (a minute)
@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM read_csv('{outside}')",
        f"SELECT * FROM read_parquet('s3://{BUCKET}/lake-other/x.parquet')",
        "SELECT * FROM read_parquet('s3://another-bucket/x.parquet')",
        f"COPY (SELECT 1) TO '{URL}/evil.csv'",
    ],
)
def test_sql_on_the_s3_lake_reads_nothing_outside_and_writes_nothing(
    runs, statement, tmp_path, s3_env
):
    fs = s3_filesystem(s3_env)
    fs.pipe(f"{BUCKET}/lake-other/x.parquet", b"PAR1")
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    before = fs.find(f"{BUCKET}/lake")
    done = run_cli("sql", statement.format(outside=outside), "--lake", URL, env=runs["env"])
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("embedlake: error:") and len(done.stderr.splitlines()) == 1
    fs.invalidate_cache()
    assert fs.find(f"{BUCKET}/lake") == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", ".", "--lake", "nosuchscheme://x/lake", "--weights", "random"], "nosuchscheme"),
        (["sql", "SELECT 1", "--lake", f"s3://{BUCKET}/no-lake-here"], "no lake at"),
    ],
)
def test_bad_lake_urls_get_one_line(cli_env, s3_server, args, message, tmp_path):
    env = dict(cli_env, **s3_server, EMBEDLAKE_CACHE=str(tmp_path / "cache"))
    done = run_cli(*args, env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.heavy  # a run that waits on a lock, then runs (35 s)
def test_a_second_writer_with_another_cache_waits_and_aborts_nothing(
    collection, cli_env, s3_server, tmp_path, monkeypatch
):
    """Two machines (two caches) writing one S3 lake: the second used to take its own cache's
    lock, go ahead, and mark the first's live run aborted. It now waits on the lake's lock."""
    import subprocess
    import threading
    import time

    from embedlake.tasks import lake
    from tests.conftest import CLI

    source, _ = collection
    s3_filesystem(s3_server).mkdir("two-writers")
    url = "s3://two-writers/lake"
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EMBEDLAKE_CACHE", str(tmp_path / "cache-1"))
    env = dict(cli_env, **s3_server, EMBEDLAKE_CACHE=str(tmp_path / "cache-2"))
    first = Lake.at(url).ensure()
    run_id = lake.new_run_id()
    live = {"run_id": run_id, "stage": "started", "status": "running"}
    args = ["run", str(source), "--lake", url, "--weights", "random"]
    with first.lock():
        first.write_part(
            lake.rows_to_table([live], lake.RUNS_SCHEMA), "runs", f"{run_id}-0-started.parquet"
        )
        second = subprocess.Popen(
            [*CLI, *args, "--backbone", "mobilenet_v1_0.25_128"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(second.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        while not any("waiting for it to finish" in line for line in lines):
            assert second.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.2)
        assert {r["stage"] for r in first.read_table("runs").to_pylist()} == {"started"}
        finished = {**live, "stage": "finished", "status": "finished"}
        first.write_part(
            lake.rows_to_table([finished], lake.RUNS_SCHEMA), "runs", f"{run_id}-1-finished.parquet"
        )
    out, _ = second.communicate(timeout=600)
    reader.join(30)
    assert second.returncode == 0, "".join(lines)
    stages = {(r["run_id"], r["stage"]) for r in first.read_table("runs").to_pylist()}
    assert not [s for s in stages if s[1] == "aborted"], stages
    others = {r for r, _ in stages} - {run_id}
    assert len(others) == 1 and (others.pop(), "finished") in stages
