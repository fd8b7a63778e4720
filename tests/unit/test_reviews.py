"""Reviews on a small synthetic lake: checked, appended whole, the latest decision per image and
kind in force, and used by a later probe in place of the given label (which stays beside it)."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedlake.tasks import lake, probes, reviews
from embedlake.tasks.catalog import build_catalog, connect_read_only
from embedlake.tasks.neighbors import build_neighbor_graph

pytestmark = pytest.mark.unit

DIM = 16
RUN = "20260102T000000Z-000000"
GROUP = ("mobilenet_v1", "w", "fp32")


def _image_id(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory) -> Path:
    """3 clusters of 10 images labelled by cluster but for 3 flipped labels: a finished run's
    files, embeddings, sidecar, graph and catalog, written as a run writes them."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, DIM))
    ids = [_image_id(n) for n in range(30)]
    vectors = np.stack([centres[n // 10] + 0.2 * rng.normal(size=DIM) for n in range(30)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folder = tmp_path_factory.mktemp("reviews") / "lake"
    root = lake.Lake.at(folder).ensure()
    root.write_part(
        lake.embeddings_table(
            image_ids=ids,
            backbone=GROUP[0],
            weights_id=GROUP[1],
            precision=GROUP[2],
            vectors=vectors.astype(np.float32),
            norms=np.ones(30, np.float32),
            run_id=RUN,
        ),
        "embeddings",
        f"{RUN}-0.parquet",
    )
    files = [{"run_id": RUN, "path": f"{i}.jpg", "image_id": i, "status": "ok"} for i in ids]
    root.write_part(lake.rows_to_table(files, lake.FILES_SCHEMA), "files", f"{RUN}.parquet")
    run = {
        "run_id": RUN,
        "stage": "finished",
        "status": "finished",
        "started_at": datetime(2026, 1, 2, tzinfo=UTC),
    }
    root.write_part(lake.rows_to_table([run], lake.RUNS_SCHEMA), "runs", f"{RUN}-1.parquet")
    labels = [f"c{n // 10}" for n in range(30)]
    for n in (0, 10, 20):  # flipped to the next cluster's label
        labels[n] = f"c{(n // 10 + 1) % 3}"
    meta = pa.table({"path": [f"{i}.jpg" for i in ids], "image_id": ids, "label": labels})
    root.write_part(meta, "metadata", f"{RUN}.parquet")
    build_neighbor_graph(root, k=5)
    build_catalog(root)
    return folder


@pytest.fixture
def root(base_lake, tmp_path) -> lake.Lake:
    return lake.Lake.at(shutil.copytree(base_lake, tmp_path / "lake"))


def _current(root: lake.Lake) -> dict[tuple[str, str], tuple[str, str | None]]:
    with connect_read_only(root) as con:
        rows = con.execute("SELECT image_id, kind, decision, value FROM current_reviews")
        return {(i, kind): (decision, value) for i, kind, decision, value in rows.fetchall()}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image_id": "x1", "decision": "keep"}, "is not an image_id"),
        ({"image_id": _image_id(1), "decision": "drop"}, "expected one of keep, exclude"),
        ({"image_id": _image_id(1), "decision": "relabel"}, "a relabel needs a value"),
        ({"image_id": _image_id(1), "decision": "tag", "value": " "}, "a tag needs a value"),
        ({"image_id": _image_id(1), "decision": "keep", "value": "x"}, "takes no value"),
        (
            {"image_id": _image_id(1), "decision": "exclude", "label_column": "label"},
            "names no label column",
        ),
    ],
)
def test_a_bad_review_is_refused_in_one_line(row, message):
    with pytest.raises(reviews.ReviewError, match=message) as refused:
        reviews.check_review(row)
    assert "\n" not in str(refused.value)


def test_a_relabel_corrects_the_label_column_by_default_and_who_is_the_os_user():
    checked = reviews.check_review({"image_id": _image_id(1).upper(), "decision": "relabel",
                                    "value": "c1"})  # fmt: skip
    assert checked["image_id"] == _image_id(1) and checked["label_column"] == "label"
    assert checked["who"]  # getpass.getuser()


def test_reviews_are_appended_and_the_latest_per_image_and_kind_wins(root):
    a, b, c = _image_id(1), _image_id(2), _image_id(3)
    first = [
        {"image_id": a, "decision": "exclude", "note": "a copy", "who": "ana"},
        {"image_id": b, "decision": "exclude"},
        {"image_id": b, "decision": "keep"},  # later in the same part: wins
        {"image_id": c, "decision": "relabel", "value": "c1"},
        {"image_id": c, "decision": "tag", "value": "blurry"},
    ]
    assert reviews.add_reviews(root, first) == 5
    then = [
        {"image_id": a, "decision": "keep"},  # an exclude then a keep is kept
        {"image_id": c, "decision": "relabel", "value": "c2"},
        {"image_id": c, "decision": "relabel", "value": "x", "label_column": "split"},
        {"image_id": c, "decision": "tag", "value": "dark"},  # tags accumulate
    ]
    assert reviews.add_reviews(root, then) == 4
    assert len(root.part_names("reviews")) == 3  # the schema part and one part per call
    assert _current(root) == {
        (a, "inclusion"): ("keep", None),
        (b, "inclusion"): ("keep", None),
        (c, "relabel:label"): ("relabel", "c2"),
        (c, "relabel:split"): ("relabel", "x"),
        (c, "tag:blurry"): ("tag", "blurry"),
        (c, "tag:dark"): ("tag", "dark"),
    }
    with connect_read_only(root) as con:
        stored = con.execute("SELECT who, run_id, made_at FROM reviews WHERE note = 'a copy'")
        who, run_id, made_at = stored.fetchone()
        labels = con.execute("SELECT * FROM reviewed_labels('label')").fetchall()
    assert (who, run_id) == ("ana", RUN) and made_at.tzinfo is not None
    assert [(i, label) for i, label, *_ in labels] == [(c, "c2")]


def test_an_image_the_lake_does_not_hold_refuses_the_whole_call(root):
    unknown = _image_id(999)
    rows = [{"image_id": _image_id(1), "decision": "exclude"}, {"image_id": unknown,
                                                                "decision": "exclude"}]  # fmt: skip
    with pytest.raises(reviews.ReviewError, match=f"holds no image {unknown}; nothing recorded"):
        reviews.add_reviews(root, rows)
    assert root.part_names("reviews") == [lake.SCHEMA_PART]


def test_a_url_lake_takes_reviews_as_parts_the_same_way(root):
    url = lake.Lake.at(f"local://{root.path}")
    assert isinstance(url, lake.UrlLake)
    assert reviews.add_reviews(url, [{"image_id": _image_id(4), "decision": "exclude"}]) == 1
    assert _current(url) == {(_image_id(4), "inclusion"): ("exclude", None)}
    assert not [p for p in (root.path / "reviews").iterdir() if ".tmp-" in p.name]


def test_probes_learn_the_reviewed_labels_and_keep_the_given_ones_beside(root):
    fixed = {_image_id(n): f"c{n // 10}" for n in (0, 10)}  # two of the three flips reviewed
    reviews.add_reviews(
        root, [{"image_id": i, "decision": "relabel", "value": v} for i, v in fixed.items()]
    )
    with connect_read_only(root) as con:
        given = dict(con.execute("SELECT image_id, label FROM metadata").fetchall())
    paths = {i: f"{i}.jpg" for i in given}
    later = "20260103T000000Z-000000"
    heard = _Heard()
    logger = logging.getLogger("embedlake")  # where a probe logs outside a flow run
    measure = probes.measure_backbone
    probes.measure_backbone = lambda name, device: (1000, 2.0)  # no real model for a unit test
    level = logger.level
    logger.addHandler(heard)
    logger.setLevel(logging.INFO)
    try:
        (row,) = probes.run_probes(root, later, {"label": given}, paths, [lake.GroupKey(*GROUP)])
    finally:
        logger.removeHandler(heard)
        logger.setLevel(level)
        probes.measure_backbone = measure
    assert row["n_reviewed_labels"] == 2
    assert "probes of label use 2 reviewed label(s)" in heard.lines[0]
    with connect_read_only(root) as con:
        issues = con.execute(
            "SELECT image_id, given_label, reviewed_label, suggested_label, is_issue "
            "FROM label_issues WHERE reviewed_label IS NOT NULL ORDER BY image_id"
        ).fetchall()
    for image_id, given_label, reviewed_label, suggested, is_issue in issues:
        assert given_label == given[image_id] != reviewed_label == fixed[image_id]
        assert suggested == reviewed_label and not is_issue
    assert len(issues) == 2


class _Heard(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
