"""The run's map stage: every current image of each group gets a place; a rerun places only the
new images on the same map version; reindex refits (a new version)."""

from __future__ import annotations

import shutil

import pytest

from embedlake.flows.pipeline import embed_collection
from embedlake.tasks import steps
from embedlake.tasks.catalog import connect_read_only
from embedlake.tasks.lake import Lake
from tests.conftest import flow_params

from ..conftest import make_distinct_photos

pytestmark = pytest.mark.flows


def _map(lake) -> list[tuple]:
    with connect_read_only(lake) as con:
        return con.execute(
            "SELECT m.image_id, m.map_version, m.placed, m.run_id, m.x, m.y FROM map AS m "
            "ORDER BY m.image_id"
        ).fetchall()


def _current(lake) -> list[str]:
    with connect_read_only(lake) as con:
        return [
            r[0] for r in con.execute("SELECT DISTINCT image_id FROM images ORDER BY 1").fetchall()
        ]


@pytest.mark.heavy  # three runs and a reindex (the fast tier's 6-minute budget)
def test_run_maps_every_image_rerun_places_new_ones_reindex_refits(prefect_api, tmp_path, capsys):
    photos = make_distinct_photos(tmp_path / "all", 9)
    source = tmp_path / "source"
    source.mkdir()
    for photo in photos[:6]:
        shutil.copy(photo, source)
    lake = tmp_path / "lake"

    first = embed_collection(flow_params(source, lake, batch_size=8))
    assert first.status == "finished"
    mapped = _map(lake)
    assert [row[0] for row in mapped] == _current(lake)
    assert len(mapped) == 6
    assert {(row[1], row[2], row[3]) for row in mapped} == {(1, "fit", first.run_id)}
    # a small run pays little for its map (no t-SNE below maps.MIN_TSNE images): 0.11 s here
    # at load 5, both on the first run (a fit) and the rerun (2 placed); 1 s leaves room for load
    assert first.stage_seconds["map"] < 1.0

    for photo in photos[6:8]:  # two new images: under half the fitted six, so placed
        shutil.copy(photo, source)
    second = embed_collection(flow_params(source, lake, batch_size=8))
    again = _map(lake)
    assert [row[0] for row in again] == _current(lake)
    assert len(again) == 8
    old = {row[0]: row for row in mapped}
    new = [row for row in again if row[0] not in old]
    assert {(row[1], row[2], row[3]) for row in new} == {(1, "neighbors", second.run_id)}
    assert all(old[row[0]] == row for row in again if row[0] in old)  # nothing else moved

    # a deleted image drops out of the view; a rerun with nothing new writes no map part
    (source / photos[0].name).unlink()
    parts = Lake.at(lake).part_names("map")
    embed_collection(flow_params(source, lake, batch_size=8))
    assert [row[0] for row in _map(lake)] == _current(lake)
    assert len(_current(lake)) == 7
    assert Lake.at(lake).part_names("map") == parts

    steps.reindex_fn(Lake.at(lake), "cpu")
    refitted = _map(lake)
    assert [row[0] for row in refitted] == _current(lake)
    assert {(row[1], row[2]) for row in refitted} == {(2, "fit")}
