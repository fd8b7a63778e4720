"""Exactly once under SIGKILL, and two writers on one lake, with the CLI in subprocesses.

Heavy (`make test-heavy`): each case runs the pipeline twice in subprocesses, 25-40 s apiece."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import CLI, make_distinct_photos, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

RUN = [*CLI, "run"]


def _start(source: Path, lake: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*RUN, str(source), "--lake", str(lake), "--weights", "random", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(condition, timeout: float = 180, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _data_parts(lake: Path, table: str) -> list[Path]:
    return [p for p in (lake / table).glob("*.parquet") if p.name != "_schema.parquet"]


def test_sigkill_mid_embedding_then_rerun_is_exactly_once(tmp_path, cli_env):
    source = tmp_path / "photos"
    n = 30
    make_distinct_photos(source, n)
    lake = tmp_path / "lake"
    options = ("--batch-size", "2", "--part-rows", "2")
    victim = _start(source, lake, cli_env, *options)
    try:
        _wait_for(
            lambda: len(_data_parts(lake, "embeddings")) >= 3 or victim.poll() is not None,
            what="three embedding parts",
        )
        assert victim.poll() is None, victim.communicate()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        os.killpg(victim.pid, signal.SIGKILL) if victim.poll() is None else None
    killed_parts = _data_parts(lake, "embeddings")
    kept = [  # every visible part reads whole
        (r["image_id"], r["backbone"])
        for p in killed_parts
        for r in pq.read_table(p).select(["image_id", "backbone"]).to_pylist()
    ]
    assert 0 < len(kept) < 2 * n
    # a part holds one backbone's rows: an image the kill left with one backbone is not skipped
    per_image = Counter(image_id for image_id, _ in kept)
    complete = sum(1 for count in per_image.values() if count == 2)

    rerun = run_cli(
        "run", str(source), "--lake", str(lake), "--weights", "random", *options, env=cli_env
    )
    assert rerun.returncode == 0, rerun.stderr
    assert not list(lake.rglob("*.tmp-*"))
    rows = [
        pq.read_table(p).select(["image_id", "backbone"]).to_pylist()
        for p in _data_parts(lake, "embeddings")
    ]
    keys = [(r["image_id"], r["backbone"]) for part in rows for r in part]
    assert len(keys) == len(set(keys)) == 2 * n  # raw parts, not the deduplicating view
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        runs = con.execute(
            "SELECT status, n_embedded, n_skipped FROM runs ORDER BY started_at"
        ).fetchall()
    assert runs[0][0] == "aborted"
    assert runs[1][0] == "finished" and runs[1][1] + runs[1][2] == n and runs[1][2] >= 1
    assert runs[1][2] == complete


def test_two_writers_wait_and_readers_never_do(tmp_path, cli_env):
    source = tmp_path / "photos"
    make_distinct_photos(source, 24)
    lake = tmp_path / "lake"
    first = _start(source, lake, cli_env, "--batch-size", "2")
    second = None
    try:
        _wait_for(
            lambda: (
                "pid" in _read(lake / ".lock")
                and (lake / "catalog.duckdb").exists()
                or first.poll() is not None
            ),
            what="the first run to hold the lake",
        )
        read = run_cli(
            "sql",
            "SELECT status FROM runs",
            "--lake",
            str(lake),
            "--format",
            "csv",
            env=cli_env,
            timeout=60,
        )
        assert read.returncode == 0, read.stderr
        assert "running" in read.stdout
        assert first.poll() is None, "the reader must have run while the writer held the lake"
        second = _start(source, lake, cli_env)
        _, err2 = second.communicate(timeout=600)
        _, err1 = first.communicate(timeout=600)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "waiting for it to finish" in err2
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        runs = con.execute(
            "SELECT status, n_embedded, n_skipped FROM runs ORDER BY started_at"
        ).fetchall()
        raw = con.execute(
            f"SELECT count(*) FROM read_parquet('{lake}/embeddings/*.parquet')"
        ).fetchone()[0]
    assert runs == [("finished", 24, 0), ("finished", 0, 24)]
    assert raw == 48


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


# failpoints (tasks.steps.failpoint): each SIGKILLs the run as it enters that stage, except
# discover-part, which fires after discovery's first files part is written (mid-discovery)
KILL_POINTS = [
    "read-sidecar",
    "discover-part",
    "sidecar",
    "embed",
    "neighbors",
    "probes",
    "catalog",
    "report",
]


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("killed")
    paths = make_distinct_photos(root / "photos", 6)
    meta = root / "meta.csv"
    meta.write_text("path,label\n" + "".join(f"{p.name},c{i % 2}\n" for i, p in enumerate(paths)))
    return root / "photos", meta


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_each_stage_then_rerun_is_clean(small_collection, tmp_path, cli_env, point):
    source, meta = small_collection
    lake = tmp_path / "lake"
    args = (
        "run",
        str(source),
        "--lake",
        str(lake),
        "--metadata",
        str(meta),
        "--weights",
        "random",
        "--backbone",
        "mobilenet_v1_0.25_128",
        "--part-rows",
        "2",
        "--label-column",
        "label",
    )
    killed = run_cli(*args, env={**cli_env, "EMBEDLAKE_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    rerun = run_cli(*args, env=cli_env)
    assert rerun.returncode == 0, rerun.stderr

    assert not list(lake.rglob("*.tmp-*"))
    for part in lake.rglob("*.parquet"):  # every part reads whole
        pq.read_metadata(part)
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        runs = con.execute("SELECT run_id, status FROM runs ORDER BY started_at").fetchall()
        # a run is recorded finished before its report is built (the report then describes the
        # finished collection), so a kill in the report stage leaves the first run finished
        first = "finished" if point == "report" else "aborted"
        assert [status for _, status in runs] == [first, "finished"]
        last = runs[1][0]
        files = con.execute("SELECT path, status FROM files WHERE run_id = ?", [last]).fetchall()
        keys = con.execute("SELECT image_id, backbone FROM embedding_rows").fetchall()
        n_meta = con.execute("SELECT count(*) FROM metadata WHERE image_id IS NOT NULL").fetchone()
        n_images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    assert sorted(path for path, _ in files) == sorted(p.name for p in source.iterdir())
    assert {status for _, status in files} == {"ok"} and n_images == 6
    assert len(keys) == len(set(keys)) == 6  # nothing lost, nothing twice
    assert n_meta == (6,)
    assert (lake / "reports" / last / "index.html").is_file()
