"""A lake is a folder: moved, copied or made read-only, it still answers `embedlake sql` with no
rebuild; a catalog built by another embedlake version still answers too (views in memory)."""

from __future__ import annotations

import os
import shutil
import subprocess

import duckdb
import pytest

from embedlake.tasks import lake
from embedlake.tasks.catalog import connect_read_only
from tests.conftest import run_cli
from tests.e2e.test_sql_sandbox import fill_lake

pytestmark = pytest.mark.e2e

COUNTS = "SELECT (SELECT count(*) FROM embeddings), (SELECT count(*) FROM metadata)"


def _sql(root, query: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EMBEDLAKE_LAKE"}
    return run_cli("sql", query, "--lake", str(root), "--format", "csv", env=env, timeout=120)


def test_a_moved_read_only_lake_answers_without_a_rebuild(tmp_path):
    fill_lake(lake.Lake.at(tmp_path / "built"))
    moved = tmp_path / "elsewhere" / "lake"
    moved.parent.mkdir()
    shutil.move(tmp_path / "built", moved)
    copied = tmp_path / "copy"
    shutil.copytree(moved, copied)
    catalog = (moved / "catalog.duckdb").read_bytes()
    subprocess.run(["chmod", "-R", "a-w", str(moved)], check=True)
    try:
        for root in (moved, copied):
            done = _sql(root, COUNTS)
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines()[1:] == ["8,1"]
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(moved)], check=True)
    assert (moved / "catalog.duckdb").read_bytes() == catalog  # nothing was rebuilt


def test_a_catalog_from_another_embedlake_version_still_answers(tmp_path):
    root = tmp_path / "lake"
    fill_lake(lake.Lake.at(root))
    with duckdb.connect(str(root / "catalog.duckdb")) as con:  # as an older embedlake left it
        con.execute("DROP MACRO embedlake_catalog_version")
    before = (root / "catalog.duckdb").read_bytes()
    shutil.move(root, tmp_path / "moved")
    with connect_read_only(tmp_path / "moved") as con:
        assert con.execute(COUNTS).fetchone() == (8, 1)
    assert (tmp_path / "moved" / "catalog.duckdb").read_bytes() == before
