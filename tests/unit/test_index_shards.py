"""The ANN searches sharded across a local Ray cluster of two workers (tasks.index_shards): the
graph they write equals the single-process path's, on a lake folder and on an S3 lake whose
index files the workers fetch to their own cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from embedlake.tasks import graph, lake
from embedlake.tasks.ann_index import BadIndex, GroupIndex
from embedlake.tasks.neighbors import build_neighbor_graph
from tests.conftest import s3_filesystem
from tests.unit.test_graph import KEY, _add, _clustered, _graph

pytest.importorskip("faiss")
pytest.importorskip("ray")
# heavy: a local Ray cluster (~10 s to start)
pytestmark = [pytest.mark.unit, pytest.mark.heavy]


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    import ray

    saved = dict(os.environ)
    # the workers inherit this environment: the S3 test server, and a cache of their own (an
    # index on S3 is fetched there, as on another node)
    os.environ.update(s3_server)
    worker_cache = tmp_path_factory.mktemp("worker-cache")
    os.environ["EMBEDLAKE_CACHE"] = str(worker_cache)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    os.environ.clear()
    os.environ.update(saved)
    yield worker_cache
    ray.shutdown()


def test_sharded_update_and_reindex_equal_the_single_process_graph(cluster, tmp_path):
    from embedlake.tasks.index_shards import RaySearch

    x = _clustered(3000, 32, seed=5)
    ids = [f"s{i:05d}" for i in range(len(x))]
    here = lake.ensure_lake(tmp_path / "here")
    _add(here, ids[:2500], x[:2500], "r0")
    build_neighbor_graph(here, k=10, ann_threshold=1000)
    there = shutil.copytree(here, tmp_path / "there")  # the same trained index and segments
    for root in (here, there):
        _add(root, ids[2500:], x[2500:], "r1")
    build_neighbor_graph(here, k=10, ann_threshold=1000)
    search = RaySearch(shard_rows=97)  # uneven shards, many per block
    written = build_neighbor_graph(there, k=10, ann_threshold=1000, search=search)
    assert search.shards == -(-500 // 97)  # the 500 new images' queries went to the cluster
    assert 500 <= written[graph.group_name(*KEY)] < 3000  # new lists and those they enter
    expected = _graph(here)
    got = _graph(there)
    assert got.keys() == expected.keys() and len(got) == 3000
    for image_id, (nb, sims) in expected.items():
        assert got[image_id][0] == nb, image_id
        np.testing.assert_allclose(got[image_id][1], sims, rtol=1e-6)

    # a reindex on the cluster: every list is what this process's search of the new index gives
    search = RaySearch(shard_rows=500)
    build_neighbor_graph(there, k=10, ann_threshold=1000, rebuild=True, search=search)
    assert search.shards == 6
    index = graph.open_index(lake.Lake.at(there), KEY)
    got = _graph(there)
    for block_ids, sims, names in graph.search_here(
        index, graph.iter_group_blocks(lake.Lake.at(there), KEY, block_rows=1000), 10
    ):
        for image_id, row, row_sims in zip(block_ids, names, sims, strict=True):
            assert got[image_id][0] == list(row), image_id
            np.testing.assert_allclose(got[image_id][1], row_sims, rtol=1e-6)


def test_workers_fetch_an_s3_lakes_index_including_the_update_in_progress(
    cluster, s3_env, tmp_path
):
    from embedlake.tasks.index_shards import RaySearch

    s3_filesystem(s3_env).mkdir("shards")
    url = "s3://shards/lake"
    lake.ensure_lake(url)
    root = lake.Lake.at(url)
    x = _clustered(1500, 16, seed=6)
    ids = [f"u{i:05d}" for i in range(len(x))]
    _add(url, ids[:1200], x[:1200], "r0")
    build_neighbor_graph(url, k=5, ann_threshold=1000, search=RaySearch(shard_rows=300))
    _add(url, ids[1200:], x[1200:], "r1")
    build_neighbor_graph(url, k=5, ann_threshold=1000, search=RaySearch(shard_rows=100))
    # the lists equal this process's search of the committed index (both segments)
    index = graph.open_index(root, KEY)
    assert index.ntotal == 1500 and len(index.segments()) == 2
    got = _graph(url)
    assert len(got) == 1500
    blocks = graph.iter_group_blocks(root, KEY, parts=["r1.parquet"])
    for block_ids, _, names in graph.search_here(index, blocks, 5):
        for image_id, row in zip(block_ids, names, strict=True):
            assert got[image_id][0] == list(row), image_id
    # the workers read the index from their own copy, fetched from S3 (the segment written by
    # the second update before its commit included)
    fetched = {p.name for p in cluster.rglob("seg-*.faiss")}
    assert {f"{s.name}.faiss" for s in index.segments()} <= fetched


def test_a_view_naming_files_outside_the_index_is_refused(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(1200, 16, seed=7)
    _add(root, [f"v{i:05d}" for i in range(1200)], x, "r0")
    build_neighbor_graph(root, k=5, ann_threshold=1000)
    view = graph.open_index(lake.Lake.at(root), KEY).view()
    assert GroupIndex.from_view(view).ntotal == 1200
    for bad in ({"name": "../x"}, {"manifest": dict(view["manifest"], trained="../../etc")}):
        with pytest.raises(BadIndex):
            GroupIndex.from_view(dict(view, **bad))
    moved = dict(view, lake=str(tmp_path / "elsewhere"))  # a node that cannot see the folder
    with pytest.raises(BadIndex, match="every node mounts"):
        GroupIndex.from_view(moved)


def test_reindex_command_on_the_cluster(cluster, tmp_path, capsys):
    from embedlake.flows.cli import main
    from tests.unit.test_graph import _assert_same, _brute_force

    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(120, 16, seed=8)
    ids = [f"c{i:03d}" for i in range(120)]
    _add(root, ids, x, "r0")
    # Ray is initialised in this process already: the command uses that connection
    assert main(["reindex", "--lake", str(root), "--device", "cpu", "--runner", "ray"]) == 0
    assert "reindexed" in capsys.readouterr().out
    _assert_same(_graph(root), _brute_force(ids, x, 10))  # below the ANN threshold: exact
