"""Text from the lake is shown as text: the terminal table escapes control characters; CSV keeps
values exact; JSON escapes them itself."""

from __future__ import annotations

import csv
import json

import pyarrow as pa

from embedlake.tasks.render import write_result

HOSTILE = "\x1b[31mred\x1b[0m\x1b]0;owned\x07"  # recolour, then retitle the terminal


def _table() -> pa.Table:
    return pa.table(
        {
            "make\x1b[2J": [HOSTILE, "two\nlines\r\x9b\u202eevil", None],
            "tags": [["\x1b[5m"], [], None],
        }
    )


def test_the_terminal_table_shows_control_characters_as_escapes(tmp_path, capsys):
    write_result(_table(), "table")
    shown = capsys.readouterr().out
    assert not set(shown) & {"\x1b", "\x07", "\r", "\x9b", "\u202e"}
    assert len(shown.splitlines()) == 5  # header, three rows, footer: one row, one line
    assert "\\x1b[31mred\\x1b[0m\\x1b]0;owned\\x07" in shown
    assert "two\\nlines\\r\\x9b\\u202eevil" in shown
    assert "make\\x1b[2J" in shown and "[\\x1b[5m]" in shown


def test_csv_and_json_keep_the_data_exact(tmp_path):
    write_result(_table(), "csv", str(tmp_path / "out.csv"))
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][0] == "make\x1b[2J" and rows[1][0] == HOSTILE
    write_result(_table(), "json", str(tmp_path / "out.jsonl"))
    text = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x07" not in text  # JSON escapes C0 controls
    assert json.loads(text.splitlines()[0])["make\x1b[2J"] == HOSTILE
