"""A lake from someone else: crafted runs rows, index manifests, catalog, file names, labels and
EXIF strings. Every reading command either works or refuses in one line, writes nothing outside
the report folder, reads nothing the lake names outside it, and runs no code the lake names."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import cli_here, jpeg_bytes, make_collection, photo, run_cli

pytestmark = pytest.mark.e2e

BACKBONE = "mobilenet_v1_0.25_128"
ESC = "\x1b[31mRED\x1b[0m"
HOSTILE_LABELS = ["$\\foo$", '=HYPERLINK("http://example.invalid")', "<script>x()</script>", ESC]
ZEN = "Beautiful is better than ugly"  # what `import this` prints


def _exif_jpeg(make: str, model: str) -> bytes:
    img = photo("coffee.png")
    exif = Image.Exif()
    exif[0x010F] = make  # Make
    exif[0x0110] = model  # Model
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()


def _snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """Every regular file under `root` (but the `skip` top-level folders): size and sha256."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in skip or not path.is_file() or path.is_symlink():
            continue
        found[str(relative)] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def _craft_runs(lake: Path, private: Path) -> None:
    """Every runs row names the private folder as its source and Pillow plugins that would run
    code if imported (`this` prints the Zen of Python, `os:abort` kills the process)."""
    for part in (lake / "runs").glob("*.parquet"):
        table = pq.read_table(part)
        if table.num_rows == 0:
            continue
        rows = table.to_pylist()
        for row in rows:
            params = json.loads(row["params"] or "{}")
            params["pillow_plugins"] = ["this", "os:abort"]
            params["source"] = str(private)
            row["params"] = json.dumps(params)
            row["source"] = str(private)
        pq.write_table(table.from_pylist(rows, schema=table.schema), part)


def _craft_manifests(lake: Path) -> list[str]:
    """An index folder per stored group whose manifest names files outside the lake."""
    from embedlake.tasks import graph

    con = duckdb.connect()
    groups = con.execute(
        "SELECT DISTINCT backbone, weights_id, precision FROM read_parquet($p)",
        {"p": str(lake / "embeddings" / "*.parquet")},
    ).fetchall()
    names = []
    for key in groups:
        name = graph.group_name(*key)
        folder = lake / "index" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text(
            json.dumps(
                {
                    "factory": "IVF4_HNSW32,SQ8",
                    "dim": 256,
                    "nlist": 4,
                    "trained": "../../../outside/trained",
                    "segments": [{"name": "../../../outside/evil", "rows": 3}],
                    "parts": [],
                }
            )
        )
        names.append(name)
    return names


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("hostile")
    source = root / "source"
    make_collection(source)
    # file names and EXIF strings that are markup, formulas and terminal escapes
    (source / "odd").mkdir()
    (source / "odd" / f"{ESC}.jpg").write_bytes(jpeg_bytes(photo("rocket.jpg")))
    (source / "odd" / "<img src=x onerror=alert(1)>.jpg").write_bytes(
        jpeg_bytes(photo("chelsea.png").rotate(90, expand=True))
    )
    (source / "odd" / "=1+1.jpg").write_bytes(_exif_jpeg(ESC, "=cmd|' /C calc'!A0"))
    paths = sorted(str(p.relative_to(source)) for p in source.rglob("*.jpg"))
    sidecar = root / "labels.csv"
    with sidecar.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label"])
        for i, path in enumerate(paths):
            writer.writerow([path, HOSTILE_LABELS[i % len(HOSTILE_LABELS)]])
    lake = root / "lake"
    # the run that makes the lake is its owner's, in this process; the crafting comes after
    done = cli_here(
        "run",
        str(source),
        "--lake",
        str(lake),
        "--metadata",
        str(sidecar),
        "--key",
        "path",
        "--label-column",
        "label",
        "--backbone",
        BACKBONE,
        "--weights",
        "random",
        "--workers",
        "0",
    )
    assert done.returncode == 0, done.stderr  # hostile text from the data never fails a run
    image_id = (
        duckdb.connect()
        .execute("SELECT image_id FROM read_parquet($p) LIMIT 1", {"p": f"{lake}/embeddings/*"})
        .fetchone()[0]
    )

    # the private folder a crafted runs row points at: the lake's own paths, as FIFOs, so a
    # reader that opened one would hang (the test's timeout fails it) rather than pass unseen
    private = root / "private"
    for path in paths:
        target = private / path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(target)
    outside = root / "outside"
    outside.mkdir()
    (outside / "evil.faiss").write_bytes(b"not an index")
    (outside / "evil.parquet").write_bytes(b"not parquet")
    (outside / "trained.faiss").write_bytes(b"not an index")
    _craft_runs(lake, private)
    _craft_manifests(lake)
    # rebuild the catalog over the crafted rows, as the lake's owner would have shipped it
    from embedlake.tasks.catalog import build_catalog

    build_catalog(lake)
    return {"root": root, "lake": lake, "source": source, "image_id": image_id}


def _check_one_line_or_ok(done, what: str) -> None:
    assert done.returncode >= 0, f"{what}: killed by signal {-done.returncode}"
    assert ZEN not in done.stdout + done.stderr, f"{what} ran `import this` from the lake"
    assert "Traceback" not in done.stderr, f"{what}:\n{done.stderr}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("embedlake:"), f"{what}: {done.stderr!r}"
        assert len([ln for ln in lines if ln.startswith("embedlake: error")]) == 1, done.stderr


def _reading_commands(h) -> list[tuple[str, list[str]]]:
    lake = str(h["lake"])
    query_photo = str(h["source"] / "good" / "astronaut.jpg")
    commands = [
        ("queries", ["queries"]),
        ("sql files", ["sql", "SELECT path, make, model FROM files", "--lake", lake]),
        ("sql metadata", ["sql", "SELECT * FROM metadata", "--lake", lake]),
        ("sql csv", ["sql", "SELECT * FROM label_issues", "--lake", lake, "--format", "csv"]),
        ("sql runs", ["sql", "SELECT source, params FROM runs", "--lake", lake]),
        (
            "nearest",
            ["nearest", h["image_id"], "--backbone", BACKBONE, "--lake", lake],
        ),
        ("similar", ["similar", query_photo, "--backbone", BACKBONE, "--lake", lake]),
        ("report", ["report", "--lake", lake]),
    ]
    from embedlake.tasks.queries import list_queries

    commands += [(f"query {name}", ["query", name, "--lake", lake]) for name in list_queries()]
    return commands


# commands that load nothing but the catalog run in this process (a subprocess each would cost
# seconds of startup); those that decode, load weights, open indexes or build a report run as a
# user runs them, in a subprocess of their own
IN_PROCESS = ("sql", "query", "queries")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    if args[0] not in IN_PROCESS:
        return run_cli(*args, env=env, timeout=300)
    return cli_here(*args)


@pytest.mark.heavy  # nearest, similar and report in subprocesses (torch imported in each): 30 s
def test_every_reading_command_on_a_hostile_lake(hostile, cli_env):
    lake, root = hostile["lake"], hostile["root"]
    before = _snapshot(lake, skip=("reports",))
    outside_before = _snapshot(root / "outside")
    for what, args in _reading_commands(hostile):
        done = _run(args, cli_env)
        _check_one_line_or_ok(done, what)
        if args[0] in ("sql", "query", "queries", "nearest", "similar"):
            # text from the lake reaches the terminal as text: no raw escape sequence
            assert "\x1b" not in done.stdout or "--format" in args, f"{what}: raw ESC on stdout"
    assert _snapshot(lake, skip=("reports",)) == before, "a reading command changed the lake"
    assert _snapshot(root / "outside") == outside_before
    # nothing was created beside the lake or in the private folder (its FIFOs are still FIFOs)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["source", "labels.csv", "lake", "private", "outside"]
    )
    for fifo in (root / "private").rglob("*.jpg"):
        assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_the_report_renders_hostile_text_as_text(hostile, cli_env):
    done = run_cli("report", "--lake", str(hostile["lake"]), env=cli_env, timeout=300)
    _check_one_line_or_ok(done, "report")
    assert done.returncode == 0, done.stderr
    report = hostile["lake"] / "reports" / "latest"
    html = (report / "index.html").read_text()
    assert "<script>x()</script>" not in html and "onerror=alert(1)>" not in html
    assert "\x1b" not in html
    for csv_file in report.glob("*.csv"):
        for line in csv_file.read_text().splitlines():
            for cell in line.split(","):
                assert not cell.strip('"').startswith(("=", "+", "@")), (csv_file.name, line)


def test_a_catalog_that_reads_outside_the_lake_is_refused(hostile, cli_env, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(hostile["lake"], lake)
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nTOP-SECRET-42\n")
    with duckdb.connect(str(lake / "catalog.duckdb")) as con:
        con.execute(f"CREATE OR REPLACE VIEW files AS SELECT * FROM read_csv('{secret}')")
    before = _snapshot(lake)
    done = run_cli("sql", "SELECT * FROM files", "--lake", str(lake), env=cli_env)
    _check_one_line_or_ok(done, "sql on a crafted catalog")
    assert "TOP-SECRET-42" not in done.stdout + done.stderr
    assert _snapshot(lake) == before
