"""The CLI's one-line error, for the errors that reach it."""

from __future__ import annotations

import duckdb
import fsspec
import pytest

from embedlake.flows.cli import one_line
from embedlake.tasks.read_only_fs import LOCAL_PROTOCOL, ReadOnlyFileSystem

pytestmark = pytest.mark.unit


def test_a_write_refused_by_the_read_only_filesystem_is_one_line_naming_why(tmp_path):
    # DuckDB quotes the Python traceback of a registered filesystem's error whole
    con = duckdb.connect()
    con.register_filesystem(
        ReadOnlyFileSystem(fsspec.filesystem("file"), str(tmp_path), LOCAL_PROTOCOL)
    )
    with pytest.raises(duckdb.Error) as caught:
        con.execute(f"COPY (SELECT 1 AS x) TO '{LOCAL_PROTOCOL}://{tmp_path}/x.parquet'")
    assert str(caught.value).startswith("Traceback")
    message = one_line(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith("the lake is read-only here")
    assert not list(tmp_path.iterdir())


def test_a_python_error_under_a_query_line_and_caret_is_its_exception_line():
    quoted = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
        "FileNotFoundError: [Errno 2] No such file: '/lake/t/x.parquet'\n\n"
        "LINE 9: FROM read_parquet(lake_path('t/*.parquet'))\n             ^^^^^^^^^^"
    )
    assert one_line(duckdb.Error(quoted)) == (
        "FileNotFoundError: [Errno 2] No such file: '/lake/t/x.parquet'"
    )


def test_one_line_of_an_ordinary_error():
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(ValueError("")) == "ValueError"
