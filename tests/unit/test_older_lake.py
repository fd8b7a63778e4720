"""A lake written by an older embedlake reads with today's views, and reading it writes nothing:
tables added since read as empty, columns added since read as null (tasks.read_only_fs shows
the schema parts it lacks from memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from embedlake.tasks import lake
from embedlake.tasks.catalog import build_catalog, connect_read_only
from embedlake.tasks.schemas import SCHEMAS


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _as_an_older_lake(folder: Path) -> None:
    """A lake as 0.3 left it: no reviews table, predictions without reviewed_label."""
    root = lake.Lake.at(folder).ensure()
    build_catalog(root)
    for part in (folder / "reviews").iterdir():
        part.unlink()
    (folder / "reviews").rmdir()
    old = SCHEMAS["predictions"]
    old = pa.schema([f for f in old if f.name != "reviewed_label"])
    pq.write_table(old.empty_table(), folder / "predictions" / lake.SCHEMA_PART)


def test_an_older_lake_reads_with_todays_views_and_nothing_is_written(tmp_path):
    folder = tmp_path / "lake"
    _as_an_older_lake(folder)
    before = _snapshot(folder)
    with connect_read_only(folder) as con:
        assert con.execute("SELECT count(*) FROM reviews").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM current_reviews").fetchone() == (0,)
        assert con.execute("SELECT count(reviewed_label) FROM predictions").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM images").fetchone() == (0,)
    assert _snapshot(folder) == before


def test_the_same_lake_as_a_url_reads_the_same_and_nothing_is_written(tmp_path):
    folder = tmp_path / "lake"
    _as_an_older_lake(folder)
    before = _snapshot(folder)
    root = lake.Lake.at(f"local://{folder}")
    with connect_read_only(root) as con:
        assert con.execute("SELECT count(*) FROM reviews").fetchone() == (0,)
        assert con.execute("SELECT count(reviewed_label) FROM predictions").fetchone() == (0,)
    assert _snapshot(folder) == before


def test_a_real_part_wins_over_the_stand_in(tmp_path):
    folder = tmp_path / "lake"
    root = lake.Lake.at(folder).ensure()
    assert root.schema_stand_ins() == {}
    (folder / "reviews" / lake.SCHEMA_PART).unlink()
    assert list(root.schema_stand_ins()) == [f"reviews/{lake.SCHEMA_PART}"]
