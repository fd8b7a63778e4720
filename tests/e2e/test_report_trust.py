"""What a report may read and how it shows what it reads: thumbnails come from the lake (made at
decode time), so a rerun's report opens no file of SOURCE; only a lake written before thumbnails
has them read from a source, one the user (or the run itself) names, never the folder a lake
names; text from the lake is text in plots, HTML and CSV; a report that fails leaves its run
finished and says so."""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from tests.conftest import cli_here, make_distinct_photos

pytestmark = pytest.mark.e2e

BACKBONE = "mobilenet_v1_0.25_128"


def _run(source: Path, lake: Path, *extra: str):
    """`embedlake run` in this process (the tests read what its report shows, not the process)."""
    args = ["--weights", "random", "--backbone", BACKBONE, "--workers", "0"]
    return cli_here("run", str(source), "--lake", str(lake), *args, *extra)


def _photos_with_a_copy(folder: Path) -> list[Path]:
    photos = make_distinct_photos(folder, 4)
    shutil.copy(photos[0], folder / "copy_of_0.jpg")  # a duplicate: its group shows thumbnails
    return photos


def _as_written_before_thumbnails(lake: Path) -> None:
    """The lake as an embedlake older than the thumbnails table left it: no thumbnails folder."""
    shutil.rmtree(lake / "thumbnails")


def test_report_thumbnails_come_from_the_lake_not_the_folder_it_names(prefect_api, tmp_path):
    private = tmp_path / "private_photos"  # what the lake's runs.source names
    _photos_with_a_copy(private)
    lake = tmp_path / "lake"
    assert _run(private, lake).returncode == 0
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT source FROM runs").fetchone()[0] == str(private)
    shutil.rmtree(lake / "reports")
    private.rename(tmp_path / "moved")  # SOURCE gone: the lake's thumbnails still show

    done = cli_here("report", "--lake", str(lake))
    assert done.returncode == 0, done.stderr
    page = (lake / "reports" / "latest" / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2  # the duplicate group's, from the lake
    assert "from the lake" in page and "copy_of_0.jpg" in page


@pytest.mark.heavy  # three runs and two reports (the fast tier's 6-minute budget)
def test_an_older_lake_reads_thumbnails_only_from_a_source_the_user_names(prefect_api, tmp_path):
    private = tmp_path / "private_photos"  # what the lake's runs.source names
    _photos_with_a_copy(private)
    lake = tmp_path / "lake"
    assert _run(private, lake).returncode == 0
    shutil.rmtree(lake / "reports")
    _as_written_before_thumbnails(lake)

    done = cli_here("report", "--lake", str(lake))
    assert done.returncode == 0, done.stderr
    page = (lake / "reports" / "latest" / "index.html").read_text()
    assert "data:image/jpeg" not in page  # nothing read from the folder the lake names
    assert "--source DIR_OR_URL" in page  # and the page says why there are no thumbnails
    assert "copy_of_0.jpg" in page  # the duplicate is still listed, by name

    done = cli_here("report", "--lake", str(lake), "--source", str(private))
    assert done.returncode == 0, done.stderr
    page = (lake / "reports" / "latest" / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2
    assert f"from {private}" in page

    missing = cli_here("report", "--lake", str(lake), "--source", str(tmp_path / "no"))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_a_lake_path_through_a_symlink_out_of_the_source_is_not_read(prefect_api, tmp_path):
    source = tmp_path / "photos"
    photos = _photos_with_a_copy(source)
    (source / "album").mkdir()
    shutil.copy(photos[1], source / "album" / "again.jpg")
    lake = tmp_path / "lake"
    assert _run(source, lake).returncode == 0
    _as_written_before_thumbnails(lake)  # else nothing is read from the source at all
    # the lake names album/again.jpg; album now leads out of the source
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(photos[2], outside / "again.jpg")
    shutil.rmtree(source / "album")
    (source / "album").symlink_to(outside, target_is_directory=True)

    done = cli_here("report", "--lake", str(lake), "--source", str(source))
    assert done.returncode == 0, done.stderr
    page = (lake / "reports" / "latest" / "index.html").read_text()
    assert "album/again.jpg&#x27; leads outside the source" in page
    assert "data:image/jpeg;base64," in page  # the files inside the source still show


@pytest.mark.heavy  # two runs with their reports (the fast tier's 6-minute budget)
def test_a_rerun_over_unchanged_files_opens_none_of_them(prefect_api, tmp_path, monkeypatch):
    """Discovery keeps their rows unread, nothing is embedded, and the report's thumbnails come
    from the lake (issue 21: a rerun over 40,000 unchanged files opened 52 for its report)."""
    source = tmp_path / "photos"
    _photos_with_a_copy(source)
    lake = tmp_path / "lake"
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def watch(path) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            name = os.fsdecode(os.fspath(path))
            if os.path.abspath(name).startswith(str(source) + os.sep):
                opened.append(name)

    def open_watched(file, *args, **kwargs):
        watch(file)
        return real_open(file, *args, **kwargs)

    def os_open_watched(path, *args, **kwargs):
        watch(path)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_watched)
    monkeypatch.setattr(os, "open", os_open_watched)
    assert _run(source, lake).returncode == 0
    assert len(set(opened)) == 5  # the watch sees the first run read every file
    opened.clear()
    done = _run(source, lake)
    monkeypatch.undo()
    assert done.returncode == 0, done.stderr
    assert opened == []
    (report,) = sorted((lake / "reports").glob("2*"))[-1:]
    page = (report / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2  # its thumbnails, from the lake


HOSTILE = {
    "math": "$\\foo$",
    "formula": '=HYPERLINK("http://x")',
    "html": "<script>alert(1)</script>",
    "terminal": "\x1b[31mred\x1b[0m",
}


def test_labels_from_data_are_text_in_plots_html_and_csv(prefect_api, tmp_path):
    source = tmp_path / "photos"
    photos = make_distinct_photos(source, 8)
    labels = list(HOSTILE.values())
    meta = tmp_path / "meta.csv"
    rows = [{"path": p.name, "label": labels[i % len(labels)]} for i, p in enumerate(photos)]
    pacsv.write_csv(pa.Table.from_pylist(rows), meta)
    lake = tmp_path / "lake"
    done = _run(source, lake, "--metadata", str(meta), "--label-column", "label")
    assert done.returncode == 0, done.stderr
    (report,) = [p for p in (lake / "reports").iterdir() if p.name != "latest"]
    page = (report / "index.html").read_text()
    assert "<h2>Labels: label</h2>" in page and page.count("data:image/png;base64,") >= 3
    assert "<script" not in page and "\x1b" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "$\\foo$" in page and "=HYPERLINK(&quot;http://x&quot;)" in page
    assert "\\u001b[31mred\\u001b[0m" in page

    purity = pacsv.read_csv(report / "label_purity.csv").column("label").to_pylist()
    assert "'" + HOSTILE["formula"] in purity
    assert HOSTILE["formula"] not in purity  # no cell a spreadsheet would run
    assert not [cell for cell in purity if cell[0] in "=+-@\t\r"]
    assert {HOSTILE["math"], HOSTILE["html"], HOSTILE["terminal"]} <= set(purity)


@pytest.mark.heavy  # runs whose reports fail, then succeed (the fast tier's 6-minute budget)
def test_a_report_that_fails_leaves_the_run_finished_and_says_so(prefect_api, tmp_path):
    source = tmp_path / "photos"
    _photos_with_a_copy(source)
    lake = tmp_path / "lake"
    assert _run(source, lake).returncode == 0
    shutil.rmtree(lake / "reports")
    (lake / "reports").write_text("a file where the report folder goes")  # the report fails
    shutil.copy(source / "photo_001.jpg", source / "copy_of_1.jpg")

    done = _run(source, lake)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "finished" in line and "report failed" in line, line
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        statuses = [
            s for (s,) in con.execute("SELECT status FROM runs ORDER BY started_at").fetchall()
        ]
        paths = {p for (p,) in con.execute("SELECT path FROM images").fetchall()}
    assert statuses == ["finished", "finished"]
    assert "copy_of_1.jpg" in paths  # the collection reached `images` all the same
