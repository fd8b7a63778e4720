"""A lake written by embedlake 0.1 (one full `files` part per run) keeps working: reruns read it,
baseline against it, add versions only, and embed nothing they already hold."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli_here

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lake_v0_1"


def _legacy_lake(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the 0.1 lake whose runs name the copy of its collection as their SOURCE."""
    source, lake = tmp_path / "legacy-src", tmp_path / "lake"
    shutil.copytree(FIXTURE / "source", source)
    shutil.copytree(FIXTURE / "lake", lake)
    for part in (lake / "runs").glob("*.parquet"):
        table = pq.read_table(part)
        if table.num_rows:
            column = pa.array([str(source.resolve())] * table.num_rows, pa.string())
            table = table.set_column(table.schema.get_field_index("source"), "source", column)
            pq.write_table(table, part)
    return source, lake


def _files_per_run(lake: Path) -> list[tuple[str, int, int]]:
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT r.status, count(f.path), count(*) FILTER (f.status = 'ok') "
            "FROM runs AS r LEFT JOIN files AS f USING (run_id) "
            "GROUP BY r.run_id, r.status, r.started_at ORDER BY r.started_at"
        ).fetchall()


def test_a_lake_from_0_1_keeps_working(tmp_path, prefect_api):
    source, lake = _legacy_lake(tmp_path)
    args = ("run", str(source), "--lake", str(lake), "--weights", "random")
    # the fixture's embeddings are bf16: `auto` keeps that only on a CPU that computes bf16
    # natively (elsewhere it re-embeds at fp32, as it should), so the test names the precision
    # and tests the 0.1 layout alone, on any machine
    args += ("--backbone", "mobilenet_v1_0.25_128", "--precision", "bf16")
    args += ("--workers", "0", "--no-report")  # in this process: the lake's layout is the subject
    first = cli_here(*args)
    assert first.returncode == 0, first.stderr
    # the 0.1 runs: 4 files then 3 (photo_2.jpg deleted); this run: the same 3, nothing embedded
    assert _files_per_run(lake) == [("finished", 4, 3), ("finished", 3, 2), ("finished", 3, 2)]
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        latest = con.execute(
            "SELECT n_embedded, n_skipped, n_files_new, n_files_gone FROM runs "
            "ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        images = sorted(r[0] for r in con.execute("SELECT path FROM images").fetchall())
        stored = con.execute("SELECT count(*) FROM embedding_rows").fetchone()[0]
    assert latest == (0, 2, 0, 0)
    assert images == ["photo_0.jpg", "photo_1.jpg"] and stored == 3

    # the first 0.2 run read every file once (0.1 rows have no mtime in ns); the next reads none
    again = cli_here(*args)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        run_id, unchanged, changed = con.execute(
            "SELECT run_id, n_files_unchanged, n_files_changed FROM runs "
            "ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    assert (unchanged, changed) == (3, 0)
    assert not list((lake / "files").glob(f"{run_id}*"))  # nothing new to store
    assert _files_per_run(lake)[-1] == ("finished", 3, 2)
