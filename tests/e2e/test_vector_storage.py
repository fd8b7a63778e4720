"""`--vector-storage`: float16 parts by default, float32 on request, both in one lake, read as FLOAT
by the catalog's views and by the neighbour graph."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli_here

pytestmark = pytest.mark.e2e

BACKBONE = "mobilenet_v1_0.25_128"  # 256-d, the cheapest backbone
FIRST = ["good/astronaut.jpg", "good/chelsea.jpg", "good/coffee.jpg"]
LATER = ["good/rocket.jpg", "copies/smaller.jpg"]


def _copy(source, names, into):
    for name in names:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, into / name)


def _run(source, lake, *extra):
    """`embedlake run` in this process (the parts it writes are the subject, not the process)."""
    args = ["run", str(source), "--lake", str(lake), "--weights", "random", "--backbone", BACKBONE]
    done = cli_here(*args, "--workers", "0", "--precision", "fp32", "--no-report", *extra)
    assert done.returncode == 0, done.stderr
    return done


def _stored_types(lake) -> dict[str, pa.DataType]:
    """run_id -> the value type of `embedding` in that run's parts (one type per run)."""
    types: dict[str, set] = {}
    for part in (lake / "embeddings").glob("*.parquet"):
        table = pq.read_table(part, columns=["run_id", "embedding"])
        for run_id in set(table.column("run_id").to_pylist()):
            types.setdefault(run_id, set()).add(table.schema.field("embedding").type.value_type)
    assert all(len(found) == 1 for found in types.values()), types
    return {run_id: found.pop() for run_id, found in types.items()}


def _vectors(con) -> dict[str, tuple[str, np.ndarray]]:
    """image_id -> (run_id, embedding) through the `embeddings` view."""
    rows = con.execute("SELECT image_id, run_id, embedding FROM embeddings").fetchall()
    return {image_id: (run_id, np.asarray(vector, np.float32)) for image_id, run_id, vector in rows}


def test_float16_and_float32_parts_share_a_lake(collection, prefect_api, tmp_path):
    source, _ = collection
    mixed, reference = tmp_path / "mixed", tmp_path / "reference"
    work = tmp_path / "src"
    _copy(source, FIRST, work)
    _run(work, mixed, "--vector-storage", "float32")
    _copy(source, LATER, work)
    _run(work, mixed)  # the default: float16
    _run(work, reference, "--vector-storage", "float32")

    with duckdb.connect(str(mixed / "catalog.duckdb"), read_only=True) as con:
        storage = dict(
            con.execute(
                "SELECT run_id, json_extract_string(params, '$.vector_storage') FROM runs "
                "ORDER BY started_at"
            ).fetchall()
        )
        embedded = dict(
            con.execute("SELECT run_id, count(*) FROM embeddings GROUP BY 1").fetchall()
        )
        kinds = con.execute("SELECT DISTINCT typeof(embedding), dim FROM embeddings").fetchall()
        fixed = con.execute(
            "SELECT DISTINCT typeof(embedding) FROM embeddings_mobilenet_v1_0_25_128"
        )
        fixed = fixed.fetchall()
        mixed_vectors = _vectors(con)
        lists = con.execute(
            "SELECT image_id, list(neighbor_id ORDER BY rank), list(similarity ORDER BY rank) "
            "FROM neighbors GROUP BY image_id"
        ).fetchall()
    with duckdb.connect(str(reference / "catalog.duckdb"), read_only=True) as con:
        reference_vectors = _vectors(con)

    # one run stored float32, the next (no option) float16; each run's parts say which
    first_run, second_run = storage
    assert list(storage.values()) == ["float32", "float16"]
    assert embedded == {first_run: 3, second_run: 2}
    assert _stored_types(mixed) == {first_run: pa.float32(), second_run: pa.float16()}
    assert set(_stored_types(reference).values()) == {pa.float32()}
    # the views read both as FLOAT lists (FLOAT[256] in the backbone's own view)
    assert kinds == [("FLOAT[]", 256)] and fixed == [("FLOAT[256]",)]
    # against the all-float32 lake: float32 values as computed (batches of other sizes: 1e-5),
    # float16 ones within 2**-11 of each unit vector's components
    assert mixed_vectors.keys() == reference_vectors.keys() and len(mixed_vectors) == 5
    for image_id, (run_id, vector) in mixed_vectors.items():
        tolerance = 1e-5 if run_id == first_run else 1e-3
        np.testing.assert_allclose(vector, reference_vectors[image_id][1], rtol=0, atol=tolerance)
    # the graph spans both parts: each image's list is the exact top 4 of the stored vectors
    ids = sorted(mixed_vectors)
    matrix = np.stack([mixed_vectors[i][1] for i in ids])
    scores = matrix @ matrix.T
    np.fill_diagonal(scores, -np.inf)
    assert sorted(image_id for image_id, _, _ in lists) == ids
    for image_id, neighbors, similarities in lists:
        row = scores[ids.index(image_id)]
        assert neighbors == [ids[j] for j in np.argsort(-row, kind="stable")[:4]], image_id
        np.testing.assert_allclose(similarities, np.sort(row)[::-1][:4], rtol=0, atol=1e-5)
