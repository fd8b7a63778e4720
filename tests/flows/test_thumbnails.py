"""Thumbnails in the lake, made by the decode that embeds each image: one per image, none redone."""

from __future__ import annotations

import io
import shutil

import duckdb
import pytest
from PIL import Image

from embedlake.flows.pipeline import embed_collection
from embedlake.tasks.lake import SCHEMA_PART
from tests.conftest import flow_params

pytestmark = pytest.mark.flows


def _thumbnails(lake):
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT image_id, thumbnail, width, height, run_id FROM thumbnails")
        rows = rows.fetchall()
        return rows, {i for (i,) in con.execute("SELECT image_id FROM embeddings").fetchall()}


def _parts(lake):
    return sorted(p.name for p in (lake / "thumbnails").iterdir() if p.name != SCHEMA_PART)


def test_a_run_writes_one_thumbnail_per_embedded_image_and_a_rerun_none(
    prefect_api, collection, tmp_path
):
    source, _ = collection
    lake = tmp_path / "lake"
    first = embed_collection(flow_params(source, lake))
    assert first.n_embedded == 5  # 4 photos and a smaller copy; the identical copy is one image
    rows, embedded = _thumbnails(lake)
    assert sorted(r[0] for r in rows) == sorted(embedded)  # one each, no broken file's
    assert len({r[0] for r in rows}) == len(rows) == 5
    for _, data, width, height, run_id in rows:
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (width, height)
        assert max(width, height) == 128 and run_id == first.run_id
    parts = _parts(lake)
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        broken = con.execute(
            "SELECT count(*), count(t.image_id) FROM files f "
            "LEFT JOIN thumbnails t USING (image_id) WHERE f.status = 'error'"
        ).fetchone()
    assert broken == (3, 0)  # the broken files keep their error rows and get no thumbnail

    second = embed_collection(flow_params(source, lake))
    assert second.n_embedded == 0
    assert _parts(lake) == parts  # nothing redone, nothing written
    assert len(_thumbnails(lake)[0]) == 5


def test_images_embedded_without_a_thumbnail_get_one_without_being_embedded_again(
    prefect_api, collection, tmp_path
):
    """A lake written before thumbnails (or a run killed between its embeddings' part and its
    thumbnails'): the next run decodes those images for their thumbnails alone, once."""
    source, _ = collection
    lake = tmp_path / "lake"
    embed_collection(flow_params(source, lake))
    for name in _parts(lake):
        (lake / "thumbnails" / name).unlink()
    shutil.rmtree(lake / "thumbnails")  # as an older embedlake left it: no folder at all

    again = embed_collection(flow_params(source, lake))
    assert again.n_embedded == 0 and again.status == "finished"
    rows, embedded = _thumbnails(lake)
    assert sorted(r[0] for r in rows) == sorted(embedded)
    assert {r[4] for r in rows} == {again.run_id}

    # the other way round (killed after its thumbnails' part, before its embeddings'): the
    # images are embedded again, their thumbnails not made again
    parts = _parts(lake)
    for part in (lake / "embeddings").glob("2*.parquet"):
        part.unlink()
    third = embed_collection(flow_params(source, lake))
    assert third.n_embedded == 5 and _parts(lake) == parts
    assert len(_thumbnails(lake)[0]) == 5
