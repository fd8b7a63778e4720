"""`run` writes and cleans up only in a lake, and only what embedlake wrote."""

from __future__ import annotations

import pytest

from embedlake.tasks.lake import Lake
from tests.conftest import cli_here

pytestmark = pytest.mark.e2e

# in this process (what `run` leaves in the folder is the subject, not the process)
RUN = [
    *("--weights", "random", "--backbone", "mobilenet_v1_0.25_128", "--workers", "0", "--no-report")
]


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


def test_a_run_spares_a_users_files_with_tmp_in_their_names(collection, prefect_api, tmp_path):
    """`run` deleted every file under --lake whose name held `.tmp-`: a user's notes too."""
    source, _ = collection
    lake = tmp_path / "lake"
    Lake.at(lake).ensure()
    mine = [lake / "notes.tmp-1.txt", lake / "embeddings" / "notes.tmp-1.txt"]
    for path in mine:
        path.write_text("the user's")
    stale = lake / "embeddings" / "r0-000000.parquet.tmp-4242-abcdef"  # a killed run's
    stale.write_bytes(b"half a part")
    done = cli_here("run", str(source), "--lake", str(lake), *RUN)
    assert done.returncode == 0, done.stderr
    assert [p.read_text() for p in mine] == ["the user's"] * 2
    assert not stale.exists()


def test_a_run_into_a_folder_that_is_not_a_lake_is_refused(collection, prefect_api, tmp_path):
    source, _ = collection
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.tmp-1.txt").write_text("the user's")
    (folder / "report.parquet.tmp-1-abcdef").write_text("the user's too")
    before = _listing(folder)
    done = cli_here("run", str(source), "--lake", str(folder), *RUN)
    assert done.returncode == 1
    assert done.stderr.startswith("embedlake: error:") and "not an embedlake lake" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert _listing(folder) == before
