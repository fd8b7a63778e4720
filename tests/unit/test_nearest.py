"""`embedlake nearest`: exact for small groups, through the ANN index for large ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedlake.flows.cli import main
from embedlake.tasks import lake
from embedlake.tasks.catalog import build_catalog, connect_read_only
from embedlake.tasks.nearest import NearestError, nearest
from embedlake.tasks.neighbors import build_neighbor_graph

from .test_graph import _add, _clustered

pytestmark = pytest.mark.unit


def _exact(ids, x, row, k):
    scores = x @ x[row]
    scores[row] = -np.inf
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def test_a_small_group_is_scanned_exactly_like_the_sql_macro(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(400, 16, seed=11)
    ids = [f"s{i:04d}" for i in range(len(x))]
    _add(root, ids[:250], x[:250], "r0")
    _add(root, ids[250:], x[250:], "r1")
    got = nearest(root, ids[7], "mobilenet_v1", k=5)
    assert got.column("image_id").to_pylist() == _exact(ids, x, 7, 5)
    assert set(got.column("method").to_pylist()) == {"exact"}
    build_catalog(root)
    with connect_read_only(root) as con:
        macro = con.execute("SELECT image_id FROM nearest(?, 'mobilenet_v1', 5)", [ids[7]])
        assert [r[0] for r in macro.fetchall()] == got.column("image_id").to_pylist()
    with pytest.raises(NearestError, match="no xception embedding of image s0007"):
        nearest(root, ids[7], "xception")


def test_a_large_group_is_searched_through_its_index_and_unindexed_parts(tmp_path):
    pytest.importorskip("faiss")
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(2600, 32, seed=13)
    ids = [f"t{i:05d}" for i in range(len(x))]
    _add(root, ids[:2500], x[:2500], "r0")
    build_neighbor_graph(root, k=10, ann_threshold=1000)
    recall = np.mean(
        [
            len(
                set(nearest(root, ids[r], "mobilenet_v1").column("image_id").to_pylist())
                & set(_exact(ids[:2500], x[:2500], r, 10))
            )
            / 10
            for r in range(0, 2500, 50)
        ]
    )
    assert recall >= 0.9
    # a part added after the graph's update is scanned exactly: its images are found too
    _add(root, ids[2500:], x[2500:], "r1")
    got = nearest(root, ids[2550], "mobilenet_v1", k=10)
    assert got.column("method")[0].as_py() == "faiss_ivf_sq8 + exact (parts not indexed yet)"
    assert len(set(got.column("image_id").to_pylist()) & set(_exact(ids, x, 2550, 10))) >= 8


def test_the_cli_prints_rows_and_one_line_errors(tmp_path, capsys):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(60, 8, seed=17)
    ids = [f"u{i:03d}" for i in range(len(x))]
    _add(root, ids, x, "r0")
    args = ["nearest", ids[3], "--backbone", "mobilenet_v1", "--lake", str(root), "--k", "3"]
    assert main([*args, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON lines
    assert [r["image_id"] for r in rows] == _exact(ids, x, 3, 3)
    assert main(["nearest", "nope", "--backbone", "mobilenet_v1", "--lake", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "embedlake: error: the lake holds no mobilenet_v1 embedding of image nope"
