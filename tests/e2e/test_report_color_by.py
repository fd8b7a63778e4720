"""`report --color-by` names the column its plots are coloured by; `--label-column` (what `run`
calls the columns it probes) still works for old scripts, with a one-line note."""

from __future__ import annotations

import pytest

from embedlake.flows import cli

from ..conftest import copy_lake


def test_report_help_names_color_by_only(capsys):
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["report", "--help"])
    out = capsys.readouterr().out
    assert "--color-by" in out and "--label-column" not in out


def test_report_colours_by_color_by_and_label_column_says_what_it_is_now(
    pipeline_lake, tmp_path, capsys
):
    lake = copy_lake(pipeline_lake.path, tmp_path / "lake")
    assert cli.main(["report", "--lake", str(lake), "--color-by", "label"]) == 0
    assert "--color-by" not in capsys.readouterr().err
    page = next((lake / "reports").glob("*/index.html")).read_text()
    assert "points are uncoloured" not in page  # the sidecar's label column coloured them

    assert cli.main(["report", "--lake", str(lake), "--label-column", "no_such"]) == 0
    assert "report --label-column is now --color-by" in capsys.readouterr().err
    page = next((lake / "reports").glob("*/index.html")).read_text()
    assert 'the sidecar has no "no_such" column' in page
