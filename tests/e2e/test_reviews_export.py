"""`embedlake review` and `embedlake export` on a copy of the session's lake, in this process:
reviews land in the lake and in `embedlake sql`, the latest decision wins, the export leaves out
excluded images and carries reviewed labels, its CSV is formula-safe, and bad input is one line."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedlake.flows.cli import main
from tests.conftest import copy_lake

pytestmark = pytest.mark.e2e


@pytest.fixture
def cli(capsys):
    """`embedlake ARGS...` through main: (exit status, stdout, stderr)."""

    def call(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's exit 2
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def lake(pipeline_lake, tmp_path) -> Path:
    return copy_lake(pipeline_lake.path, tmp_path / "lake")


def _sql(cli, lake: Path, tmp_path: Path, query: str) -> list[dict]:
    out = tmp_path / "result.json"
    code, _, err = cli("sql", query, "--lake", str(lake), "--format", "json", "--output", str(out))
    assert code == 0, err
    return [json.loads(line) for line in out.read_text().splitlines()]


def _paths_by_image(cli, lake: Path, tmp_path: Path) -> dict[str, list[str]]:
    rows = _sql(cli, lake, tmp_path, "SELECT image_id, path FROM images ORDER BY path")
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["image_id"], []).append(row["path"])
    return found


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_reviews_shape_the_export(cli, lake, tmp_path):
    images = _paths_by_image(cli, lake, tmp_path)
    dropped, undone, relabelled = sorted(images)[:3]
    lake_arg = ("--lake", str(lake))
    for args in (
        (dropped, "--exclude", "--note", "blurry copy"),
        (undone, "--exclude"),
        (undone, "--keep"),  # an exclude then a keep is kept
        (relabelled, "--relabel", '=HYPERLINK("x")', "--who", "ana"),
    ):
        code, out, err = cli("review", *args, *lake_arg)
        assert code == 0 and out.startswith("recorded 1 review(s)"), err
    stored = _sql(cli, lake, tmp_path, "SELECT image_id, decision, value, who, run_id FROM reviews")
    assert [r["decision"] for r in stored] == ["exclude", "exclude", "keep", "relabel"]
    (finished,) = _sql(cli, lake, tmp_path, "SELECT run_id FROM runs WHERE status = 'finished'")
    assert {r["run_id"] for r in stored} == {finished["run_id"]}
    assert stored[-1]["who"] == "ana" and stored[0]["who"]  # the OS user when not given

    parquet = tmp_path / "curated.parquet"
    code, out, err = cli("export", "--output", str(parquet), *lake_arg)
    assert code == 0, err
    rows = pq.read_table(parquet).to_pylist()
    kept = sorted(path for image_id, paths in images.items() if image_id != dropped
                  for path in paths)  # fmt: skip
    assert [r["path"] for r in rows] == kept and f"exported {len(kept)} image(s)" in out
    assert {"path", "image_id", "label", "reviewed_label"} <= set(rows[0])
    for row in rows:  # the given label stays; the reviewed one is beside it
        assert row["label"] is not None
        assert row["reviewed_label"] == ('=HYPERLINK("x")' if row["image_id"] == relabelled
                                         else None)  # fmt: skip

    table = tmp_path / "curated.csv"
    code, _, err = cli("export", "--format", "csv", "--output", str(table), *lake_arg)
    assert code == 0, err
    with table.open(newline="") as handle:
        cells = {r["image_id"]: r["reviewed_label"] for r in csv.DictReader(handle)}
    assert cells[relabelled] == '\'=HYPERLINK("x")'  # a spreadsheet shows it, never runs it
    assert len(cells) == len(images) - 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_bad_input_is_refused_in_one_line_and_writes_nothing(cli, lake, tmp_path):
    before = _tree(lake)
    unknown = "f" * 64
    refused = [
        (("review", unknown, "--exclude"), f"holds no image {unknown}"),
        (("review", "not-an-id", "--keep"), "is not an image_id"),
        (("review", unknown, "--keep", "--label-column", "x"), "names no label column"),
        (("export", "--output", str(lake / "curated.parquet")), "is inside the lake"),
        (("export", "--output", str(lake / "reviews" / "x.csv")), "is inside the lake"),
        (("export", "--output", str(tmp_path / "no" / "x.csv")), "no such folder"),
    ]
    for args, message in refused:
        code, out, err = cli(*args, "--lake", str(lake))
        assert code == 1 and out == "", (args, err)
        assert err.startswith("embedlake: error: ") and message in err, err
        assert len(err.strip().splitlines()) == 1, err
    code, _, err = cli("review", unknown, "--keep", "--exclude", "--lake", str(lake))
    assert code == 2 and "not allowed with argument" in err  # one decision per command
    assert _tree(lake) == before
