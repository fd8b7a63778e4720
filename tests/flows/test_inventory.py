"""Reruns cost what changed: unchanged files are not read, and storage grows with change only."""

from __future__ import annotations

import os
import shutil

import duckdb
import pytest

from embedlake.flows.pipeline import embed_collection
from embedlake.tasks.lake import SCHEMA_PART
from tests.conftest import flow_params

pytestmark = pytest.mark.flows


def _run(source, lake, **extra):
    return embed_collection(flow_params(source, lake, **extra))


def _files(lake, run_id) -> dict[str, tuple[str, str]]:
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT path, image_id, status FROM files WHERE run_id = ?", [run_id]
        ).fetchall()
    return {path: (image_id, status) for path, image_id, status in rows}


def _parts(lake, table) -> set[str]:
    return {p.name for p in (lake / table).glob("*.parquet") if p.name != SCHEMA_PART}


def test_an_unchanged_file_is_not_read_again_unless_rehash(prefect_api, collection, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(collection[0], source)
    lake = tmp_path / "lake"
    first = _run(source, lake)
    assert (first.n_files_new, first.n_files_unchanged) == (9, 0)
    before = _files(lake, first.run_id)
    files_parts = _parts(lake, "files")

    # other bytes, same size and mtime: the quick check cannot tell, so the file is not read
    target = source / "good" / "coffee.jpg"
    stat = target.stat()
    target.write_bytes(bytes(reversed(target.read_bytes())))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = _run(source, lake)
    assert (second.n_files_new, second.n_files_changed) == (0, 0)
    assert second.n_files_unchanged == 9 and second.n_embedded == 0
    assert _files(lake, second.run_id) == before  # the stale hash proves it was not opened
    assert _parts(lake, "files") == files_parts  # an unchanged collection stores no file rows

    third = _run(source, lake, rehash=True)
    assert third.n_files_unchanged == 0
    rehashed = _files(lake, third.run_id)
    assert rehashed["good/coffee.jpg"] != before["good/coffee.jpg"]  # read: new bytes, error
    assert rehashed["good/coffee.jpg"][1] == "error"


def test_changed_and_deleted_files_are_versions_and_gone_rows(prefect_api, collection, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(collection[0], source)
    lake = tmp_path / "lake"
    first = _run(source, lake)
    (source / "copies" / "same_bytes.jpg").unlink()
    shutil.copy(source / "good" / "chelsea.jpg", source / "good" / "coffee.jpg")  # new bytes
    (source / "new.jpg").write_bytes((source / "good" / "rocket.jpg").read_bytes())
    second = _run(source, lake)
    counts = [getattr(second, f"n_files_{k}") for k in ("new", "changed", "unchanged", "gone")]
    assert counts == [1, 1, 7, 1]
    assert second.n_files == 9 and second.n_embedded == 0  # every image already embedded

    files = _files(lake, second.run_id)
    assert "copies/same_bytes.jpg" not in files and "new.jpg" in files
    assert files["good/coffee.jpg"] == files["good/chelsea.jpg"]
    assert set(_files(lake, first.run_id)) - set(files) == {"copies/same_bytes.jpg"}
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        stored = con.execute(
            "SELECT count(*) FROM read_parquet(?)", [str(lake / "files" / "*.parquet")]
        ).fetchone()[0]
        images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    # the first run's 9 rows and the error version of the truncated JPEG its decoder found,
    # then one new and one changed version
    assert stored == 9 + 1 + 2
    assert images == 6 - 1 + 1  # ok files: one copy gone, one new


def test_a_file_whose_error_its_bytes_do_not_decide_is_read_again(
    prefect_api, collection, tmp_path
):
    source = tmp_path / "src"
    shutil.copytree(collection[0], source)
    lake = tmp_path / "lake"
    first = _run(source, lake, max_pixels=100_000)  # the 512x512 photos are over this limit

    def codes(run_id):
        with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
            rows = con.execute(
                "SELECT path, error_code FROM files WHERE run_id = ?", [run_id]
            ).fetchall()
        return dict(rows)

    before = codes(first.run_id)
    bombs = {path for path, code in before.items() if code == "decompression_bomb"}
    assert len(bombs) >= 4 and before["broken/empty.jpg"] == "empty_file"

    second = _run(source, lake)  # the default limit: the same files, unchanged on disk
    after = codes(second.run_id)
    # a pixel limit is not the bytes' own error: those files are probed again, now 'ok'
    assert second.n_files_changed == len(bombs) and second.n_files_new == 0
    assert second.n_files_unchanged == 9 - len(bombs)
    assert (
        after.pop("broken/truncated.jpg") == "truncated"
    )  # its header passes, now its pixels fail
    assert all(after[path] is None for path in bombs - {"broken/truncated.jpg"})
    assert after["broken/empty.jpg"] == "empty_file"  # decided by its bytes: kept, not read
    assert second.n_embedded == 4  # the four photos (the truncated one fails to decode)
