"""Sidecar metadata: keys by path or image_id, unmatched counts, keys that escape SOURCE."""

from __future__ import annotations

import pandas as pd
import pytest

from embedlake.tasks.metadata import MetadataError, join_sidecar, read_sidecar

pytestmark = pytest.mark.unit

FILES = [
    {"path": "a/cat.jpg", "image_id": "aa"},
    {"path": "b/dog.jpg", "image_id": "bb"},
    {"path": "b/dog_copy.jpg", "image_id": "bb"},
    {"path": "c/none.jpg", "image_id": "cc"},
]


def test_keyed_by_path_with_counts():
    frame = pd.DataFrame(
        {"path": ["a/cat.jpg", "./b/dog.jpg", "gone.jpg"], "label": ["c", "d", "x"]}
    )
    result = join_sidecar(frame, "path", FILES)
    assert list(result.frame["image_id"].fillna("-")) == ["aa", "bb", "-"]
    assert list(result.frame["path"]) == ["a/cat.jpg", "b/dog.jpg", "gone.jpg"]
    assert (result.n_rows, result.n_without_file, result.n_files_without_row) == (3, 1, 2)


def test_keyed_by_image_id():
    frame = pd.DataFrame({"image_id": ["BB", "zz"], "label": ["d", "x"]})
    result = join_sidecar(frame, "image_id", FILES)
    assert list(result.frame["path"].fillna("-")) == ["b/dog.jpg", "-"]
    assert (result.n_without_file, result.n_files_without_row) == (1, 2)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path.jpg", "a/../../x.jpg"])
def test_keys_that_escape_source_are_refused(key):
    with pytest.raises(MetadataError, match="escapes SOURCE"):
        join_sidecar(pd.DataFrame({"path": [key]}), "path", FILES)


def test_missing_key_column_is_named():
    with pytest.raises(MetadataError, match="no such column.*columns: file, label"):
        join_sidecar(pd.DataFrame({"file": ["a"], "label": ["b"]}), "path", FILES)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_formats(tmp_path, suffix):
    frame = pd.DataFrame({"path": ["a/cat.jpg"], "label": ["c"]})
    path = tmp_path / f"meta{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
    }[suffix]()
    assert read_sidecar(path).to_dict("records") == [{"path": "a/cat.jpg", "label": "c"}]
