"""`embedlake nearest`: exact for small groups, through the ANN index for large ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedlake.flows.cli import main
from embedlake.tasks import graph, lake
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


# ------------------------------------------------------------ the index as untrusted lake data


def _indexed_lake(location):
    """A lake (a folder or a URL) whose mobilenet_v1 group is searched through its index."""
    pytest.importorskip("faiss")
    root = lake.Lake.at(location).ensure()
    x = _clustered(400, 16, seed=29)
    ids = [f"v{i:04d}" for i in range(len(x))]
    _add(root, ids, x, "r0")
    build_neighbor_graph(root, k=5, ann_threshold=100)
    return root, ids


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _tree(path):
    """Every path under `path` with its size and mtime: what a writer would change."""
    return {
        (str(p.relative_to(path)), p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in [path, *path.rglob("*")]
    }


@pytest.mark.parametrize(
    "field", ["segment", "trained", "segment_with_slash", "rows", "not_json", "no_segments"]
)
def test_a_crafted_manifest_is_refused_in_one_line(tmp_path, field):
    """A manifest naming `../../../outside/evil` must not be joined to a path: `nearest` read
    such a file outside the lake (here a real segment, which it would have searched)."""
    import shutil

    from embedlake.tasks.ann_index import BadIndex

    root, ids = _indexed_lake(tmp_path / "lake")
    folder = root.path / "index" / graph.group_name("mobilenet_v1", "w-m", "fp32")
    manifest = _manifest(folder)
    segment = manifest["segments"][0]["name"]
    outside = tmp_path / "outside"
    outside.mkdir()
    for ext in ("faiss", "parquet"):
        shutil.copy(folder / f"{segment}.{ext}", outside / f"evil.{ext}")
    evil = "../../../outside/evil"
    if field == "segment":
        manifest["segments"][0]["name"] = evil
    elif field == "segment_with_slash":
        manifest["segments"][0]["name"] = f"seg-000001-abcdef/{evil}"
    elif field == "trained":
        manifest["trained"] = evil
    elif field == "rows":
        manifest["segments"][0]["rows"] = "many"
    elif field == "no_segments":
        del manifest["segments"]
    text = "{not json" if field == "not_json" else json.dumps(manifest)
    (folder / "manifest.json").write_text(text)
    with pytest.raises(BadIndex) as refused:
        nearest(root, ids[3], "mobilenet_v1", k=3)
    assert len(str(refused.value).splitlines()) == 1


def test_a_crafted_manifest_on_a_url_lake_writes_nothing_outside_the_cache(tmp_path, monkeypatch):
    """The reader's copy of a URL lake's index: a crafted `trained` or segment name made
    `nearest` download into a path outside its cache."""
    import fsspec

    from embedlake.tasks.ann_index import BadIndex

    monkeypatch.setenv("EMBEDLAKE_CACHE", str(tmp_path / "cache"))
    url = f"memory://{tmp_path.name}/lake"
    root, ids = _indexed_lake(url)
    fs = fsspec.filesystem("memory")
    remote = f"/{tmp_path.name}/lake/index/{graph.group_name('mobilenet_v1', 'w-m', 'fp32')}"
    manifest = json.loads(fs.cat_file(f"{remote}/manifest.json"))
    segment = manifest["segments"][0]["name"]
    # the crafted lake holds the files its names point at, as an attacker's would
    escape = "../../../../../escaped"
    for ext in ("faiss", "parquet"):
        fs.pipe_file(f"{remote}/{escape}.{ext}", fs.cat_file(f"{remote}/{segment}.{ext}"))
    manifest["trained"] = escape
    manifest["segments"][0]["name"] = escape
    fs.pipe_file(f"{remote}/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(BadIndex, match="not a file embedlake writes"):
        nearest(url, ids[3], "mobilenet_v1", k=3)
    cache = tmp_path / "cache"
    assert not [p for p in tmp_path.rglob("escaped*")]
    assert all(p.resolve().is_relative_to(cache) for p in cache.rglob("*"))


def test_a_cached_segment_cut_short_is_fetched_again(tmp_path, monkeypatch):
    """A download killed midway left a short segment under its final name: every later
    `nearest` (and run) failed with `RuntimeError: index` until the cache was deleted."""
    monkeypatch.setenv("EMBEDLAKE_CACHE", str(tmp_path / "cache"))
    url = f"memory://{tmp_path.name}/lake"
    _indexed_lake(url)
    root = lake.Lake.at(url)
    ids = sorted(graph.group_ids(root, lake.GroupKey("mobilenet_v1", "w-m", "fp32")).to_pylist())
    import shutil

    shutil.rmtree(root.local_dir / "index")  # another machine: nothing cached
    want = nearest(url, ids[3], "mobilenet_v1", k=5)
    assert want.column("method")[0].as_py() == graph.ANN_METHOD
    folder = root.local_dir / "index" / graph.group_name("mobilenet_v1", "w-m", "fp32")
    cached = sorted(folder.glob("seg-*.faiss"))
    assert cached
    with cached[0].open("r+b") as handle:  # as a kill during the download leaves it
        handle.truncate(cached[0].stat().st_size // 2)
    assert nearest(url, ids[3], "mobilenet_v1", k=5).equals(want)
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("indexed", [False, True])
def test_nearest_writes_nothing_to_the_lake(tmp_path, capsys, indexed):
    """`nearest` created LAKE/index/<group>/: a read-only mount failed, and a read-only
    command wrote to the lake."""
    if indexed:
        root, ids = _indexed_lake(tmp_path / "lake")
    else:
        root = lake.ensure_lake(tmp_path / "lake")
        x = _clustered(60, 8, seed=31)
        ids = [f"w{i:03d}" for i in range(len(x))]
        _add(root, ids, x, "r0")
    path = lake.Lake.at(root).path
    before = _tree(path)
    args = ["nearest", ids[3], "--backbone", "mobilenet_v1", "--lake", str(path), "--k", "3"]
    assert main(args) == 0
    assert len(capsys.readouterr().out.splitlines()) > 1
    assert _tree(path) == before
    assert main(["nearest", ids[3], "--backbone", "xception", "--lake", str(path)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _tree(path) == before


def test_a_group_name_from_crafted_lake_data_is_refused():
    from embedlake.tasks.ann_index import BadIndex

    assert graph.group_name("mobilenet_v1_0.5_160", "w", "fp32").startswith("mobilenet_v1_0.5")
    with pytest.raises(BadIndex):
        graph.group_name("mobilenet_v1", "w", "../../../x")
