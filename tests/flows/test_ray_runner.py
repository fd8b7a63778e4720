"""`--runner ray` on a local Ray cluster (two CPUs): the same lake as the local runner, and a
shard whose worker process dies is retried without duplicates."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from embedlake.flows.pipeline import embed_collection, with_runner
from embedlake.tasks.lake import Lake
from embedlake.tasks.params import RunParams
from tests.conftest import make_distinct_photos, s3_filesystem

pytest.importorskip("prefect_ray")
# heavy: a local Ray cluster, and shard workers importing torch (25 s a case)
pytestmark = [pytest.mark.flows, pytest.mark.heavy]

BACKBONES = ["mobilenet_v1_0.25_128", "xception"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("crash") / "crashed"


@pytest.fixture(scope="module")
def ray_cluster(crash_marker, s3_server):
    import ray

    # before the workers start: they inherit this environment (the S3 test server's included)
    saved = dict(os.environ)
    os.environ.update(s3_server)
    os.environ["EMBEDLAKE_TEST_CRASH_MARKER"] = str(crash_marker)
    # shard tasks import the crash plugin from tests/; workers inherit this environment
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


def _params(source, lake, **extra):
    return RunParams(
        source=str(source),
        lake=str(lake),
        backbones=BACKBONES,
        weights="random",
        batch_size=4,
        **extra,
    )


def _lake(root):
    with duckdb.connect(str(root / "catalog.duckdb"), read_only=True) as con:
        files = con.execute(
            "SELECT path, image_id, status, error_code FROM files ORDER BY path"
        ).fetchall()
        emb = con.execute(
            "SELECT image_id, backbone, embedding FROM embeddings ORDER BY image_id, backbone"
        ).fetchall()
    raw = [
        (r["image_id"], r["backbone"])
        for p in (root / "embeddings").glob("*.parquet")
        for r in pq.read_table(p, columns=["image_id", "backbone"]).to_pylist()
    ]
    return files, emb, raw


def test_ray_lake_equals_local_lake(prefect_api, ray_cluster, collection, tmp_path):
    source, _ = collection
    local = embed_collection(_params(source, tmp_path / "local", workers=0))
    remote = with_runner(f"ray={ray_cluster}")(
        _params(source, tmp_path / "ray", runner=f"ray={ray_cluster}", shard_size=2, workers=0)
    )
    for key in ("n_files", "n_ok", "n_error", "n_embedded", "n_skipped", "error_counts"):
        assert getattr(local, key) == getattr(remote, key), key
    files_l, emb_l, raw_l = _lake(tmp_path / "local")
    files_r, emb_r, raw_r = _lake(tmp_path / "ray")
    assert files_l == files_r
    assert [e[:2] for e in emb_l] == [e[:2] for e in emb_r]
    for a, b in zip(emb_l, emb_r, strict=True):  # bf16 on 1 vs 2 threads: tolerance, not bits
        assert float(np.dot(a[2], b[2])) > 0.999
    assert len(raw_r) == len(set(raw_r)) == len(emb_r)
    shard_parts = [p for p in (tmp_path / "ray" / "embeddings").glob("*-s*.parquet")]
    assert len(shard_parts) == 3  # 5 images in shards of 2, one part each


def test_a_shard_whose_worker_dies_is_retried_without_duplicates(
    prefect_api, ray_cluster, crash_marker, tmp_path
):
    source = tmp_path / "photos"
    make_distinct_photos(source, 6)
    (source / "zz_crash.img").write_bytes(b"CRASHONCE" + b"\0" * 64)
    marker = crash_marker
    lake = tmp_path / "lake"
    summary = with_runner(f"ray={ray_cluster}")(
        _params(
            source,
            lake,
            runner=f"ray={ray_cluster}",
            shard_size=3,
            workers=0,
            pillow_plugins=["tests.crash_once_plugin"],
        )
    )
    assert marker.exists(), "the plugin never crashed a worker"
    assert summary.n_embedded == 6 and summary.error_counts == {"corrupt": 1}
    files, emb, raw = _lake(lake)
    assert len(raw) == len(set(raw)) == 12
    assert dict((f[0], f[3]) for f in files)["zz_crash.img"] == "corrupt"


def test_ray_shards_write_straight_to_an_s3_lake(
    prefect_api, ray_cluster, s3_server, collection, tmp_path
):
    """Shard tasks upload their parts to the URL lake; the driver's catalog reads them."""
    source, _ = collection
    s3_filesystem(s3_server).mkdir("embedlake-ray")
    url = "s3://embedlake-ray/lake"
    local = embed_collection(_params(source, tmp_path / "local", workers=0))
    remote = with_runner(f"ray={ray_cluster}")(
        _params(source, url, runner=f"ray={ray_cluster}", shard_size=2, workers=0)
    )
    assert remote.n_embedded == local.n_embedded == 5
    key = ("image_id", "backbone", "weights_id", "precision")
    rows = Lake.at(url).read_table("embeddings").to_pylist()
    stored = sorted(tuple(r[k] for k in key) for r in rows)
    expected = sorted(
        tuple(r[k] for k in key)
        for r in Lake.at(tmp_path / "local").read_table("embeddings").to_pylist()
    )
    assert stored == expected and len(stored) == len(set(stored)) == 10
    parts = s3_filesystem(s3_server).glob("embedlake-ray/lake/embeddings/*-s*.parquet")
    assert len(parts) == 3  # 5 images in shards of 2, one part each
