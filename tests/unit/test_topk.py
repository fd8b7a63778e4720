"""The one exact top-k (`topk.top_k`) and the group search built on it (`graph.search_group`)."""

from __future__ import annotations

import numpy as np
import pytest

from embedlake.tasks import graph, lake
from embedlake.tasks.neighbors import build_neighbor_graph
from embedlake.tasks.topk import merge, top_k

from .test_graph import KEY, _add, _clustered

pytestmark = pytest.mark.unit


def _blocks(ids, vectors, size):
    return [(ids[i : i + size], vectors[i : i + size]) for i in range(0, len(ids), size)]


@pytest.mark.parametrize("size", [1, 3, 8, 100])
def test_equal_similarities_go_to_the_first_met_whatever_the_blocks(size):
    rng = np.random.default_rng(0)
    # small integers: every dot product exact, whatever the order of the sums
    base = rng.integers(-3, 4, size=(5, 8)).astype(np.float32)
    # every vector stored three times under other ids: ties everywhere
    vectors = np.concatenate([base, base, base])
    ids = [f"i{n:02d}" for n in range(len(vectors))]
    got_ids, got_s = top_k(base, _blocks(ids, vectors, size), 7)
    scores = base @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    assert got_ids.tolist() == np.asarray(ids, object)[order].tolist()
    np.testing.assert_allclose(got_s, np.take_along_axis(scores, order, 1), rtol=1e-6)


def test_own_ids_are_left_out_and_unfilled_slots_are_none():
    vectors = np.eye(3, dtype=np.float32)
    ids, sims = top_k(vectors, [(["a", "b", "c"], vectors)], 4, query_ids=["a", "b", "c"])
    assert [set(row[:2]) for row in ids] == [{"b", "c"}, {"a", "c"}, {"a", "b"}]
    assert (ids[:, 2:] == None).all() and np.isneginf(sims[:, 2:]).all()  # noqa: E711


def test_a_start_answer_comes_first_among_equals_and_counts_once():
    query = np.array([[1.0, 0.0]], np.float32)
    start = (np.array([["s", "t"]], object), np.array([[1.0, 0.5]], np.float32))
    blocks = [(["u", "s"], np.array([[1.0, 0.0], [1.0, 0.0]], np.float32))]
    ids, sims = top_k(query, blocks, 3, start=start)
    assert ids.tolist() == [["s", "u", "t"]]
    np.testing.assert_allclose(sims, [[1.0, 1.0, 0.5]])


def test_each_block_sees_every_score():
    rng = np.random.default_rng(1)
    queries, keys = rng.normal(size=(4, 6)), rng.normal(size=(10, 6))
    seen = []
    top_k(queries, _blocks(list(range(10)), keys, 4), 2, each_block=lambda s, i: seen.append(s))
    np.testing.assert_allclose(np.concatenate([s.numpy() for s in seen], 1), queries @ keys.T, 1e-5)


def test_merge_keeps_the_best_first_and_takes_no_id_twice():
    best = np.array([["a", None]], object), np.array([[0.9, -np.inf]], np.float32)
    ids, sims = merge(*best, np.array([["a", "b"]], object), np.array([[0.95, 0.9]], np.float32), 2)
    assert ids.tolist() == [["a", "b"]]
    np.testing.assert_allclose(sims, [[0.9, 0.9]])


def test_search_group_through_the_index_keeps_to_the_images_asked_for(tmp_path):
    pytest.importorskip("faiss")
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(1600, 16, seed=21)
    ids = [f"g{i:05d}" for i in range(len(x))]
    _add(root, ids[:1500], x[:1500], "r0")
    build_neighbor_graph(root, k=5, ann_threshold=1000)
    _add(root, ids[1500:], x[1500:], "r1")  # not indexed yet: scanned exactly
    among = set(ids[::3])  # a current collection of every third image
    found, sims, method = graph.search_group(lake.Lake.at(root), KEY, x[:4], 10, among=among)
    assert method == "faiss_ivf_sq8 + exact (parts not indexed yet)"
    assert all(i in among for i in found.ravel()) and np.isfinite(sims).all()
    assert (np.diff(sims, axis=1) <= 0).all()
    keep = np.array([i in among for i in ids])
    scores = x[:4] @ x[keep].T
    exact = np.asarray(ids, object)[keep][np.argsort(-scores, axis=1)[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.9
