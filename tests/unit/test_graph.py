"""The maintained neighbour graph: incremental updates equal a rebuild; CKA. (Its bounded
memory at 10N is measured in tests/slow/test_graph_memory.py.)"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.parquet as pq
import pytest

from embedlake.tasks import graph, lake, samples
from embedlake.tasks.catalog import build_catalog, connect_read_only
from embedlake.tasks.neighbors import build_neighbor_graph, exact_topk, linear_cka
from tests.conftest import as_written_before_scores

pytestmark = pytest.mark.unit

KEY = lake.GroupKey("mobilenet_v1", "w-m", "fp32")


def _unit(x: np.ndarray) -> np.ndarray:
    # float16 values, as the lake stores vectors by default: what is stored is exactly these, so
    # the references computed from them below (brute force, CKA) hold to float32's tolerances
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return unit.astype(np.float16).astype(np.float32)


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 2), dim))
    return _unit(centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim)))


def _add(root, ids, vectors, run, backbone="mobilenet_v1") -> None:
    table = lake.embeddings_table(
        image_ids=list(ids),
        backbone=backbone,
        weights_id=f"w-{backbone[0]}",
        precision="fp32",
        vectors=vectors,
        norms=np.ones(len(ids), np.float32),
        run_id=run,
    )
    lake.Lake.at(root).write_part(table, "embeddings", f"{run}.parquet")


def _graph(root, where: str = "backbone = 'mobilenet_v1'") -> dict[str, tuple[list, list]]:
    """The `neighbors` view's current lists of one group: image_id -> (neighbours, sims)."""
    build_catalog(root)
    with connect_read_only(root) as con:
        rows = con.execute(
            "SELECT image_id, list(neighbor_id ORDER BY rank), list(similarity ORDER BY rank)"
            f" FROM neighbors WHERE {where} GROUP BY image_id"
        ).fetchall()
    return {image_id: (nb, sims) for image_id, nb, sims in rows}


def _brute_force(ids, vectors, k) -> dict[str, tuple[list[str], list[float]]]:
    idx, sims = exact_topk(vectors, k)
    return {i: ([ids[j] for j in row], list(s)) for i, row, s in zip(ids, idx, sims, strict=True)}


def _assert_same(got, expected) -> None:
    assert got.keys() == expected.keys()
    for image_id, (nb, sims) in expected.items():
        assert got[image_id][0] == nb, image_id
        np.testing.assert_allclose(got[image_id][1], sims, rtol=1e-5, atol=1e-6)


def test_incremental_updates_equal_a_full_rebuild(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(400, 24, seed=1)
    ids = [f"img{i:04d}" for i in range(len(x))]
    # batches of very different sizes, a lone image, and a byte copy stored twice
    bounds = [0, 2, 3, 150, 151, 300, 400]
    for step, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        _add(root, ids[a:b], x[a:b], f"r{step}")
        build_neighbor_graph(root, k=5, query_block=7, key_block=64)
    _add(root, ids[:10], x[:10], "again")  # stored twice: nothing new to the graph
    assert build_neighbor_graph(root, k=5) == {graph.group_name(*KEY): 0}
    expected = _brute_force(ids, x, 5)
    _assert_same(_graph(root), expected)
    parts = [p for p in lake.Lake.at(root).part_names("neighbors") if p != lake.SCHEMA_PART]
    assert len(parts) == 6  # one per update that added images
    # and a rebuild gives the same lists, in one part per group
    build_neighbor_graph(root, k=5, rebuild=True)
    _assert_same(_graph(root), expected)
    parts = [p for p in lake.Lake.at(root).part_names("neighbors") if p != lake.SCHEMA_PART]
    assert len(parts) == 1


def test_a_legacy_whole_graph_part_is_version_zero(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(60, 8, seed=2)
    ids = [f"i{i:02d}" for i in range(60)]
    _add(root, ids[:40], x[:40], "r0")
    build_neighbor_graph(root, k=3)
    # as embedlake wrote it before the graph was maintained: one `<group>.parquet` per group
    folder = root / "neighbors"
    (part,) = [p for p in folder.glob("*-0*.parquet")]
    as_written_before_scores(root, part.name, f"{graph.group_name(*KEY)}.parquet")
    _add(root, ids[40:], x[40:], "r1")
    build_neighbor_graph(root, k=3)
    _assert_same(_graph(root), _brute_force(ids, x, 3))


def _indexed_ids(root) -> list[str]:
    index = graph.open_index(lake.Lake.at(root), KEY)
    return [i for seg in index.segments() for i in index._labels(seg)]


def test_ann_mode_inserts_into_the_index_in_the_lake(tmp_path):
    pytest.importorskip("faiss")
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(3000, 32, seed=3)
    ids = [f"a{i:05d}" for i in range(len(x))]
    _add(root, ids[:2500], x[:2500], "r0")
    build_neighbor_graph(root, k=10, ann_threshold=1000)
    assert sorted(_indexed_ids(root)) == ids[:2500]
    # labels' ids in 2,048-row groups: resolving one label reads one small group
    seg = graph.open_index(lake.Lake.at(root), KEY).segments()[0]
    folder = root / "index" / graph.group_name(*KEY)
    assert pq.ParquetFile(folder / f"{seg.name}.parquet").metadata.num_row_groups == 2
    _add(root, ids[2500:], x[2500:], "r1")
    written = build_neighbor_graph(root, k=10, ann_threshold=1000)
    index = graph.open_index(lake.Lake.at(root), KEY)
    assert index.ntotal == 3000 and index.manifest.parts == ["r0.parquet", "r1.parquet"]
    assert sorted(_indexed_ids(root)) == ids  # each inserted once
    assert len(index.manifest.segments) == 2  # the first one was not rewritten
    assert 500 <= written[graph.group_name(*KEY)] < 3000  # the new lists and those they enter
    # nothing but the manifest's files is left in the index folder
    files = {p.name for p in (root / "index" / graph.group_name(*KEY)).iterdir()}
    assert len(files) == 1 + 1 + 2 * 2  # manifest, trained, two segments of two files
    got, expected = _graph(root), _brute_force(ids, x, 10)
    recall = np.mean([len(set(got[i][0]) & set(expected[i][0])) / 10 for i in ids])
    assert recall >= 0.9
    # a rerun with nothing new changes nothing
    assert build_neighbor_graph(root, k=10, ann_threshold=1000) == {graph.group_name(*KEY): 0}


@pytest.mark.parametrize("scan", ["faiss", "batched"])
def test_ann_search_maps_one_segment_at_a_time_and_merges(tmp_path, monkeypatch, scan):
    """Many small updates: segments are merged once there are too many; search results equal
    those of one index holding everything (same lists probed), whether each segment is scanned
    by faiss query by query or list by list (tasks/ivf_scan.py)."""
    faiss = pytest.importorskip("faiss")
    from embedlake.tasks import ann_index, ivf_scan

    monkeypatch.setattr(ann_index, "MAX_SMALL_SEGMENTS", 3)
    monkeypatch.setattr(ivf_scan, "MIN_QUERIES_PER_LIST", 0 if scan == "batched" else 10**9)
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(2400, 32, seed=5)
    ids = [f"b{i:05d}" for i in range(len(x))]
    _add(root, ids[:2000], x[:2000], "r00")
    build_neighbor_graph(root, k=5, ann_threshold=1000)
    for step in range(8):
        lo = 2000 + 50 * step
        _add(root, ids[lo : lo + 50], x[lo : lo + 50], f"r{step + 1:02d}")
        build_neighbor_graph(root, k=5, ann_threshold=1000)
    index = graph.open_index(lake.Lake.at(root), KEY)
    assert index.ntotal == 2400 and sorted(_indexed_ids(root)) == ids
    assert len(index.manifest.segments) <= 1 + 3 + 1  # merged: not one segment per update
    whole = index._empty()
    whole.add(x)
    faiss.extract_index_ivf(whole).nprobe = index.nprobe
    want_s, want_i = whole.search(x[:100], 5)
    got_s, got_ids = index.search(x[:100], 5)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-5)
    assert (got_ids == np.asarray(ids, object)[want_i]).mean() > 0.98  # ties may swap


def test_an_index_of_embedlake_0_2_is_converted_not_rebuilt(tmp_path):
    faiss = pytest.importorskip("faiss")
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(1500, 32, seed=7)
    ids = [f"c{i:05d}" for i in range(len(x))]
    _add(root, ids[:1200], x[:1200], "r0")
    build_neighbor_graph(root, k=5, ann_threshold=1000)
    # the 0.2 layout: index/<group>.faiss (one file, loaded whole) + <group>.ids-<n>.parquet
    name = graph.group_name(*KEY)
    old = faiss.index_factory(32, "IVF16,SQ8", faiss.METRIC_INNER_PRODUCT)
    old.train(x[:1200])
    old.add(x[:1200])
    for path in (root / "index" / name).iterdir():
        path.unlink()
    (root / "index" / name).rmdir()
    faiss.write_index(old, str(root / "index" / f"{name}.faiss"))
    lake.write_part_atomically(
        pa.table({"image_id": ids[:1200]}), root / "index" / f"{name}.ids-{1200:012d}.parquet"
    )
    _add(root, ids[1200:], x[1200:], "r1")
    written = build_neighbor_graph(root, k=5, ann_threshold=1000)[name]
    assert written < 1200  # the new lists and those they enter, not a rebuild
    index = graph.open_index(lake.Lake.at(root), KEY)
    assert index.manifest.parts == ["r0.parquet", "r1.parquet"] and index.ntotal == 1500
    assert not list((root / "index").glob(f"{name}.*"))


def test_cka_from_blocks_equals_the_in_memory_formula(tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(500, 16, seed=4)
    rng = np.random.default_rng(5)
    y = _unit(x @ rng.normal(size=(16, 24)) + 0.3 * rng.normal(size=(500, 24)))
    ids = [f"c{i:03d}" for i in range(500)]
    _add(root, ids, x, "r0")
    _add(root, ids[100:][::-1], y[100:][::-1], "r1", backbone="xception")  # other order, subset
    build_neighbor_graph(root, k=3)
    (row,) = lake.Lake.at(root).read_table("agreement").to_pylist()
    assert row["n_images"] == 400
    assert row["linear_cka"] == pytest.approx(linear_cka(x[100:], y[100:]), rel=1e-9)


def test_cka_samples_the_smallest_ids_both_backbones_hold(tmp_path):
    """At most cka_sample images: the smallest ids (ids are SHA-256 digests in a lake, so a
    uniform sample that stays put as the collection grows), found across parts in any order,
    among the images both groups hold."""
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(300, 16, seed=7)
    y = _unit(x @ np.random.default_rng(8).normal(size=(16, 24)))
    order = np.random.default_rng(9).permutation(300)
    ids = [f"c{i:03d}" for i in range(300)]
    for n, run in ((0, "r0"), (150, "r1")):  # two parts a backbone, ids shuffled
        pick = order[n : n + 150]
        _add(root, [ids[i] for i in pick], x[pick], run)
        keep = [i for i in pick if i != 2]  # xception lacks c002
        _add(root, [ids[i] for i in keep], y[keep], f"{run}x", backbone="xception")
    mobilenet = graph.group_keys(lake.Lake.at(root))[0]
    kept = samples.group_sample(lake.Lake.at(root), mobilenet, 40)
    assert kept.ids.to_pylist() == ids[:40]
    np.testing.assert_array_equal(kept.vectors, x[:40])
    build_neighbor_graph(root, k=3, cka_sample=40)
    (row,) = lake.Lake.at(root).read_table("agreement").to_pylist()
    sample = [i for i in range(40) if i != 2]  # the 40 smallest of each group, held by both
    assert row["n_images"] == len(sample)
    assert row["linear_cka"] == pytest.approx(linear_cka(x[sample], y[sample]), rel=1e-9)


def test_the_agreement_sample_is_kept_and_read_with_the_new_parts_alone(
    tmp_path, monkeypatch, caplog
):
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(400, 16, seed=17)
    y = _unit(x @ np.random.default_rng(18).normal(size=(16, 24)))
    order = np.random.default_rng(19).permutation(400)
    ids = [f"k{i:03d}" for i in range(400)]

    def add(run, pick):
        _add(root, [ids[i] for i in pick], x[pick], run)
        _add(root, [ids[i] for i in pick], y[pick], f"{run}x", backbone="xception")

    def cka_row():
        (row,) = lake.Lake.at(root).read_table("agreement").to_pylist()
        return row

    add("r0", order[:300])
    build_neighbor_graph(root, k=3, cka_sample=50)
    first = order[:300][np.argsort(order[:300])][:50]  # the 50 smallest ids of the first run
    assert cka_row()["linear_cka"] == pytest.approx(linear_cka(x[first], y[first]), rel=1e-9)
    kept = lake.Lake.at(root).part_names(samples.FOLDER)
    assert len(kept) == 3  # a sample per group, and the pair's sums
    sums, kept = kept[0], kept[1:]
    assert sums.startswith("cka-")
    # the next run's images: the sample is brought up to date from their parts alone
    add("r1", order[300:])
    probe = lake.Lake.at(shutil.copytree(root, tmp_path / "probe"))  # this lake runs on below
    keys = graph.group_keys(probe)
    opened = []
    real = graph._embedding_parts
    monkeypatch.setattr(
        graph, "_embedding_parts", lambda r, names=None: opened.append(names) or real(r, names)
    )
    for key in keys:
        samples.group_sample(probe, key, 50)
    assert opened == [["r1.parquet"], ["r1x.parquet"]] * 2  # each group, the new parts alone
    monkeypatch.undo()
    # the pair's sums: the rows that entered the sample added, those pushed out taken away
    summed = []
    real_add = samples._add_rows
    monkeypatch.setattr(
        samples,
        "_add_rows",
        lambda s, a, b, sign=1: summed.append(sign * len(a)) or real_add(s, a, b, sign),
    )
    build_neighbor_graph(root, k=3, cka_sample=50)
    monkeypatch.undo()
    entered = len(set(range(50)) - set(first))
    assert summed == [entered, -entered] and 0 < entered < 50
    row = cka_row()
    assert row["n_images"] == 50  # the 50 smallest of all 400, not of the first 300
    expected = linear_cka(x[:50], y[:50])
    assert row["linear_cka"] == pytest.approx(expected, rel=1e-9)
    # sums from elsewhere (another shape, for these ids) are summed again
    bogus = pa.table({"n": [50], **{f: [[1.0]] for f in ("sx", "sy", "xx", "yy", "xy")}})
    meta = pq.read_schema(root / samples.FOLDER / sums).metadata or {}
    pq.write_table(bogus.replace_schema_metadata(meta), root / samples.FOLDER / sums)
    add("r2", [])  # a run that adds nothing new to the samples: the sums are read
    with caplog.at_level("WARNING", logger="embedlake"):
        build_neighbor_graph(root, k=3, cka_sample=50)
    assert "agreement sums" in caplog.text
    assert cka_row()["linear_cka"] == pytest.approx(expected, rel=1e-9)
    caplog.clear()
    # a sample file from elsewhere (other columns, a part name outside the lake) is rebuilt
    folder = root / samples.FOLDER
    pq.write_table(pa.table({"image_id": ["k000"], "path": ["../../etc/passwd"]}), folder / kept[0])
    crafted = pa.table({"image_id": ["zzz"], "embedding": [[1.0] * 16]}).replace_schema_metadata(
        {b"embedlake.sample": b'{"k": 50, "parts": ["../../../etc/passwd"]}'}
    )
    pq.write_table(crafted, folder / kept[1])
    with caplog.at_level("WARNING", logger="embedlake"):
        build_neighbor_graph(root, k=3, cka_sample=50)
    assert "unreadable" in caplog.text
    assert cka_row()["linear_cka"] == pytest.approx(expected, rel=1e-9)
    # a reindex rebuilds them from the parts
    build_neighbor_graph(root, k=3, cka_sample=50, rebuild=True)
    assert cka_row()["linear_cka"] == pytest.approx(expected, rel=1e-9)


def test_reindex_command_rebuilds_the_graph_from_parquet(tmp_path, capsys):
    from embedlake.flows.cli import main

    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(120, 8, seed=6)
    ids = [f"r{i:03d}" for i in range(120)]
    _add(root, ids[:80], x[:80], "r0")
    build_neighbor_graph(root, k=4)
    _add(root, ids[80:], x[80:], "r1")
    build_neighbor_graph(root, k=4)
    # doubt: a wrong newest list for one image, and an orphan part of a group that is gone
    bogus = (
        lake.Lake.at(root)
        .read_table("neighbors")
        .filter(pa.compute.equal(lake.Lake.at(root).read_table("neighbors")["image_id"], "r000"))
    )
    bogus = bogus.slice(0, 4)  # its list from the first part: ranks 1..4
    bogus = bogus.set_column(4, "neighbor_id", pa.array(["r119"] * 4))
    lake.Lake.at(root).write_part(bogus, "neighbors", f"{graph.group_name(*KEY)}-00000099.parquet")
    lake.Lake.at(root).write_part(bogus, "neighbors", "gone-fp32-000000000000-00000001.parquet")
    assert _graph(root)["r000"][0] == ["r119"] * 4
    assert main(["reindex", "--lake", str(root), "--device", "cpu"]) == 0
    assert "reindexed" in capsys.readouterr().out
    _assert_same(_graph(root), _brute_force(ids, x, 10))  # reindex keeps `run`'s default k
    parts = [p for p in lake.Lake.at(root).part_names("neighbors") if p != lake.SCHEMA_PART]
    assert parts == [f"{graph.group_name(*KEY)}-00000100.parquet"]
    assert main(["reindex", "--lake", str(tmp_path / "nowhere")]) == 1


def test_an_update_killed_before_its_commit_is_redone_once(tmp_path, monkeypatch):
    """Killed after its segment and lists were written but before the manifest: the next update
    indexes the same rows again (the orphan segment is deleted), and no list counts an image
    twice."""
    pytest.importorskip("faiss")
    from embedlake.tasks import ann_index

    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(2200, 32, seed=19)
    ids = [f"k{i:05d}" for i in range(len(x))]
    _add(root, ids[:2000], x[:2000], "r0")
    build_neighbor_graph(root, k=10, ann_threshold=1000)
    _add(root, ids[2000:], x[2000:], "r1")
    commit = ann_index.GroupIndex.commit

    def killed(self):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ann_index.GroupIndex, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        build_neighbor_graph(root, k=10, ann_threshold=1000)
    monkeypatch.setattr(ann_index.GroupIndex, "commit", commit)
    build_neighbor_graph(root, k=10, ann_threshold=1000)
    assert sorted(_indexed_ids(root)) == ids  # once each
    folder = root / "index" / graph.group_name(*KEY)
    assert len(list(folder.iterdir())) == 1 + 1 + 2 * 2  # the orphan segment is gone
    got = _graph(root)
    assert all(len(set(nb)) == len(nb) for nb, _ in got.values())
    assert set(got) == set(ids)


def test_ann_mode_on_a_lake_behind_fsspec(tmp_path):
    """A URL lake: the index's files are uploaded, and another machine (an empty cache) reads
    them back and updates them."""
    pytest.importorskip("faiss")
    import fsspec

    url = f"memory://{tmp_path.name}/lake"
    root = lake.Lake.at(url).ensure()
    x = _clustered(1600, 32, seed=23)
    ids = [f"m{i:05d}" for i in range(len(x))]
    _add(root, ids[:1400], x[:1400], "r0")
    build_neighbor_graph(root, k=5, ann_threshold=1000)
    fs = fsspec.filesystem("memory")
    remote = fs.ls(f"/{tmp_path.name}/lake/index/{graph.group_name(*KEY)}", detail=False)
    assert any(p.endswith("manifest.json") for p in remote) and len(remote) == 4
    # another machine: nothing cached
    import shutil

    shutil.rmtree(root.local_dir / "index")
    _add(root, ids[1400:], x[1400:], "r1")
    build_neighbor_graph(root, k=5, ann_threshold=1000)
    index = graph.open_index(lake.Lake.at(url), KEY)
    assert index.ntotal == 1600 and len(index.manifest.segments) == 2


def test_the_index_puts_each_vector_in_its_nearest_centroids_list(tmp_path):
    """A new index's coarse quantiser is exact (flat); one written with an HNSW quantiser (before)
    is searched and added to at QUANTIZER_EF, not faiss's default of 16."""
    faiss = pytest.importorskip("faiss")
    from embedlake.tasks import ann_index

    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(3000, 32, seed=4)
    _add(root, [f"q{i:05d}" for i in range(len(x))], x, "r0")
    build_neighbor_graph(root, k=10, ann_threshold=1000)
    index = graph.open_index(lake.Lake.at(root), KEY)
    names = [index.manifest.trained] + [seg.name for seg in index.segments()]
    for name in names:  # the trained index every segment copies, and the segments themselves
        read = faiss.read_index(str(index.folder / f"{name}.faiss"))
        ivf = faiss.extract_index_ivf(read)
        assert isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat)
        _, lists = ivf.quantizer.search(np.ascontiguousarray(x[:200]), 1)
        exact = np.argmax(x[:200] @ ivf.quantizer.reconstruct_n(0, ivf.nlist).T, axis=1)
        assert (lists[:, 0] == exact).mean() > 0.99  # float ties aside
    legacy = faiss.index_factory(32, "IVF16_HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT)
    legacy.train(np.ascontiguousarray(x[:1000]))
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(ann_index._tuned(legacy)).quantizer)
    assert quantizer.hnsw.efSearch == ann_index.QUANTIZER_EF > 16  # faiss's default: 16


def test_a_search_finds_each_querys_lists_once_and_what_every_segment_would(tmp_path):
    """`_search` picks each query's probed lists once, from the trained index every segment
    copies, and searches the segments with them: the hits of each segment's own search, merged."""
    faiss = pytest.importorskip("faiss")
    root = lake.ensure_lake(tmp_path / "lake")
    x = _clustered(3000, 32, seed=9)
    ids = [f"s{i:05d}" for i in range(len(x))]
    for run, rows in (("r0", slice(0, 1500)), ("r1", slice(1500, 3000))):
        _add(root, ids[rows], x[rows], run)
        build_neighbor_graph(root, k=10, ann_threshold=1000)
    index = graph.open_index(lake.Lake.at(root), KEY)
    assert len(index.segments()) == 2
    queries = np.ascontiguousarray(x[::40], np.float32)
    sims, found = index._search(queries, 10)
    hits = [[] for _ in queries]
    for seg in index.segments():
        own = faiss.read_index(str(index.folder / f"{seg.name}.faiss"))
        faiss.extract_index_ivf(own).nprobe = index.nprobe
        seg_sims, labels = own.search(queries, 10)
        names = index._names(seg, labels.ravel()).reshape(labels.shape)
        for q in range(len(queries)):
            hits[q] += [(s, i) for s, i in zip(seg_sims[q], names[q], strict=True) if i is not None]
    for q, row in enumerate(hits):
        best = sorted(row, key=lambda hit: -hit[0])[:10]
        assert set(found[q]) == {i for _, i in best}
        np.testing.assert_allclose(sims[q], [s for s, _ in best], rtol=1e-5)


def test_an_agreement_sample_over_float16_and_float32_parts(tmp_path):
    """A lake whose runs stored vectors as float16 and as float32 (--vector-storage): the kept
    sample holds float32, and the CKA is that of the stored values."""
    root = lake.ensure_lake(tmp_path / "lake")
    rng = np.random.default_rng(21)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = x @ rng.normal(size=(8, 12)).astype(np.float32)
    ids = [f"m{i:02d}" for i in range(60)]
    for run, rows, storage in (("r0", slice(0, 30), "float16"), ("r1", slice(30, 60), "float32")):
        for backbone, vectors in (("mobilenet_v1", x), ("xception", y)):
            table = lake.embeddings_table(
                image_ids=ids[rows],
                backbone=backbone,
                weights_id=f"w-{backbone[0]}",
                precision="fp32",
                vectors=vectors[rows],
                norms=np.ones(30, np.float32),
                run_id=run,
                storage=storage,
            )
            lake.Lake.at(root).write_part(table, "embeddings", f"{run}{backbone[0]}.parquet")
    build_neighbor_graph(root, k=3, cka_sample=50)
    stored_x = np.concatenate([x[:30].astype(np.float16).astype(np.float32), x[30:50]])
    stored_y = np.concatenate([y[:30].astype(np.float16).astype(np.float32), y[30:50]])
    (row,) = lake.Lake.at(root).read_table("agreement").to_pylist()
    assert row["n_images"] == 50
    assert row["linear_cka"] == pytest.approx(linear_cka(stored_x, stored_y), rel=1e-9)
    kept = samples.group_sample(lake.Lake.at(root), graph.group_keys(lake.Lake.at(root))[0], 50)
    assert kept.vectors.dtype == np.float32


def test_the_graph_writes_each_lists_scores_before_it_and_the_catalog_reads_them(tmp_path):
    """Each neighbours part has a scores part of its name: per list, the rows' similarity sum,
    count and best. `list_score_versions` reads it (a changed score shows), and leaves out one
    whose neighbours part is missing (an update killed between the two writes)."""
    import pandas as pd

    root = lake.Lake.at(tmp_path / "lake").ensure()
    rng = np.random.default_rng(8)
    ids = np.asarray([f"i{i:02d}" for i in range(30)], object)
    neighbors = ids[rng.integers(0, 30, (30, 5))]
    neighbors[::4, 3:] = None  # shorter lists
    neighbors[7, :] = None  # an empty one: no row, no score
    sims = -np.sort(-rng.uniform(0.1, 1.0, (30, 5)).astype(np.float32), axis=1)
    part = graph._write_lists(root, KEY, graph.Lists(ids, neighbors, sims), "exact")
    rows = pq.read_table(root.path / "neighbors" / part).to_pandas()
    rows["similarity"] = rows["similarity"].astype(np.float64)  # as DuckDB's sum() adds them
    expected = rows.groupby("image_id")["similarity"].agg(["sum", "count", "max"])
    stored = pq.read_table(root.path / "list_scores" / part).to_pandas().set_index("image_id")
    assert list(stored.index) == list(expected.index) and "i07" not in stored.index
    np.testing.assert_allclose(stored["similarity_sum"], expected["sum"], rtol=1e-12)
    assert (stored["n"] == expected["count"]).all()
    assert (stored["max_similarity"] == expected["max"]).all()
    assert set(stored["method"]) == {"exact"}
    close = rows[rows["similarity"] >= lake.CLOSE_FLOOR].sort_values(["image_id", "rank"])
    for image_id, kept in stored["close"].items():  # the rows at or above the floor, in rank order
        mine = close[close["image_id"] == image_id]
        assert [(c["neighbor_id"], c["rank"]) for c in kept] == list(
            zip(mine["neighbor_id"], mine["rank"], strict=True)
        )
        assert [c["similarity"] for c in kept] == list(mine["similarity"])
    assert 0 < len(close) < len(rows)
    assert set(stored[["backbone", "weights_id", "precision"]].itertuples(index=False)) == {KEY}

    changed = pq.read_table(root.path / "list_scores" / part)
    changed = changed.set_column(
        changed.schema.get_field_index("similarity_sum"),
        "similarity_sum",
        pa.compute.add(changed["similarity_sum"], 100.0),
    )
    root.write_part(changed, "list_scores", part)
    build_catalog(root)
    with connect_read_only(root) as con:
        got = pd.DataFrame(
            con.execute("SELECT image_id, similarity_sum FROM list_scores()").fetchall(),
            columns=["image_id", "similarity_sum"],
        ).set_index("image_id")
    np.testing.assert_allclose(got.loc[expected.index, "similarity_sum"], expected["sum"] + 100)
    with connect_read_only(root) as con:  # one row a list: its rows were not scored again
        assert con.execute("SELECT count(*) FROM list_score_versions").fetchall() == [(29,)]
        assert con.execute("SELECT close_floor()").fetchall() == [(np.float32(lake.CLOSE_FLOOR),)]
    root.delete_part("neighbors", part)
    with connect_read_only(root) as con:
        assert con.execute("SELECT count(*) FROM list_score_versions").fetchall() == [(0,)]


@pytest.mark.parametrize("scores_parts", [True, False], ids=["scored", "written-before-scores"])
def test_scores_and_close_rows_follow_the_current_lists_across_versions(tmp_path, scores_parts):
    """list_scores() and close_neighbors() read every version's lists without the `neighbors`
    view's window; what they give is what that view's current lists give: random lists
    rewritten over several versions (a legacy version 0 too, whose scores part is then left
    without its neighbours part), groups sharing a backbone; the lists' scores parts read, or
    (a lake written before them) none."""
    root = lake.Lake.at(tmp_path / "lake").ensure()
    rng = np.random.default_rng(5)
    ids = np.asarray([f"i{i:03d}" for i in range(60)], object)
    keys = [
        KEY,
        lake.GroupKey("mobilenet_v1", "w-m", "bf16"),
        lake.GroupKey("xception", "w-x", "fp32"),
    ]
    for key in keys:
        for version in range(4):
            chosen = ids[rng.random(len(ids)) < 0.5]
            k = 4
            picks = rng.integers(0, len(ids), (len(chosen), k))
            sims = -np.sort(-rng.uniform(0.5, 1.0, (len(chosen), k)).astype(np.float32), axis=1)
            neighbors = ids[picks]
            neighbors[rng.random(len(chosen)) < 0.2, -1] = None  # some lists shorter
            name = graph._write_lists(root, key, graph.Lists(chosen, neighbors, sims), "exact")
            if version == 0:  # as embedlake wrote a group's graph before it was maintained
                as_written_before_scores(root.path, name, f"{graph.group_name(*key)}.parquet")
    if not scores_parts:  # a lake written before the lists had scores
        for part in root.part_names("list_scores"):
            if part != lake.SCHEMA_PART:
                root.delete_part("list_scores", part)
        for part in root.part_names("neighbors"):
            as_written_before_scores(root.path, part)
    build_catalog(root)
    group = "backbone, weights_id, precision, image_id"
    with connect_read_only(root) as con:
        scores = con.execute(
            f"SELECT {group}, similarity_sum, n FROM list_scores() ORDER BY ALL"
        ).fetchall()
        expected = con.execute(
            f"SELECT {group}, sum(similarity), count(*) FROM neighbors GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert [s[:4] + (s[5],) for s in scores] == [e[:4] + (e[5],) for e in expected]
        np.testing.assert_allclose([s[4] for s in scores], [e[4] for e in expected], rtol=1e-6)
        for threshold in (0.0, 0.8, 0.95, 2.0):
            close = con.execute(
                "SELECT * FROM close_neighbors($t) ORDER BY ALL", {"t": threshold}
            ).fetchall()
            current = con.execute(
                "SELECT * FROM neighbors WHERE similarity >= $t ORDER BY ALL", {"t": threshold}
            ).fetchall()
            assert close == current, threshold
        assert (
            0
            < len(con.execute("SELECT * FROM close_neighbors(0.8)").fetchall())
            < len(con.execute("SELECT * FROM neighbor_versions WHERE similarity >= 0.8").fetchall())
        )  # older versions' rows were there to be left out


@pytest.mark.parametrize("wanted", ["all", "some"])
def test_read_lists_gives_each_images_latest_list_across_versions(tmp_path, wanted):
    """What an update merges into (`read_lists`, sql/search/list_rows.sql) is what the
    `neighbors` view holds as current: random lists over four versions, a legacy version 0 and
    a part written before the `version` column, a group beside it sharing the backbone; all of
    the group's images, or some (one without a list, which gets none)."""
    root = lake.Lake.at(tmp_path / "lake").ensure()
    rng = np.random.default_rng(11)
    ids = np.asarray([f"i{i:03d}" for i in range(80)], object)
    other = lake.GroupKey("mobilenet_v1", "w-m", "bf16")
    k = 4
    for key in (KEY, other):
        for version in range(4):
            chosen = ids[rng.random(len(ids)) < 0.5]
            neighbors = ids[rng.integers(0, len(ids), (len(chosen), k))]
            neighbors[rng.random(len(chosen)) < 0.2, -1] = None  # some lists shorter
            sims = -np.sort(-rng.uniform(0.1, 1.0, (len(chosen), k)).astype(np.float32), axis=1)
            name = graph._write_lists(root, key, graph.Lists(chosen, neighbors, sims), "exact")
            if version == 0:
                as_written_before_scores(root.path, name, f"{graph.group_name(*key)}.parquet")
            elif version == 2:
                as_written_before_scores(root.path, name)
    current = _graph(root, where="precision = 'fp32'")
    only = None if wanted == "all" else pa.array(["i999", *sorted(current)[::3]], pa.string())
    expected = sorted(current) if only is None else sorted(current)[::3]
    lists = graph.read_lists(root, KEY, k, only=only)
    assert list(lists.ids) == expected
    for image_id, nb, sims in zip(lists.ids, lists.neighbors, lists.sims, strict=True):
        want_nb, want_sims = current[image_id]
        assert list(nb[: len(want_nb)]) == want_nb and all(n is None for n in nb[len(want_nb) :])
        np.testing.assert_array_equal(sims[: len(want_sims)], np.float32(want_sims))
