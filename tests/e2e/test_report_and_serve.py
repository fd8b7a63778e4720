"""The run report (structure, no remote references, rendered in headless Chromium) and
`embedlake serve` producing scheduled runs on its own."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from tests.conftest import CLI, run_cli

pytestmark = pytest.mark.e2e

SECTIONS = [
    "The run",
    "Errors by code",
    "Cameras and dates (EXIF)",
    "Duplicates and near-duplicates",
    "Outliers",
    "Label structure",
    "Backbone agreement",
    "What changed since the previous run",
]


@pytest.fixture(scope="module")
def reported_lake(collection, tmp_path_factory, prefect_api):
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    source, meta = collection
    lake = tmp_path_factory.mktemp("report") / "lake"
    for _ in range(2):  # a second run, so "what changed" has something to compare
        done = run_cli(
            "run",
            str(source),
            "--lake",
            str(lake),
            "--weights",
            "random",
            "--metadata",
            str(meta),
            env=env,
        )
        assert done.returncode == 0, done.stderr
    return lake, env


def test_each_run_leaves_a_self_contained_report(reported_lake):
    lake, _ = reported_lake
    reports = [p for p in (lake / "reports").iterdir() if p.name != "latest"]
    assert len(reports) == 2
    page = (lake / "reports" / "latest" / "index.html").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}" in page, title
    assert "RANDOM WEIGHTS" in page
    assert page.count("data:image/png;base64,") >= 3  # plots inline
    assert page.count("data:image/jpeg;base64,") >= 4  # thumbnails inline
    # nothing fetched from anywhere: no remote URL in an attribute, no external CSS or script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page
    summary = json.loads((lake / "reports" / "latest" / "summary.json").read_text())
    assert summary["sections"] == SECTIONS and summary["n_files"] == 9
    assert {
        "errors.csv",
        "duplicates.csv",
        "near_duplicates.csv",
        "label_purity.csv",
        "changes.csv",
    } <= {p.name for p in (lake / "reports" / "latest").iterdir()}


def test_report_command_rebuilds_it(reported_lake):
    lake, env = reported_lake
    shutil.rmtree(lake / "reports")
    done = run_cli("report", "--lake", str(lake), env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (lake / "reports" / "latest" / "index.html").is_file()
    assert "index.html" in done.stdout


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None and not os.environ.get("CI_REQUIRE_CHROMIUM"),
    reason="chromium not installed (.ci/run installs it and sets CI_REQUIRE_CHROMIUM)",
)
def test_report_renders_in_headless_chromium(reported_lake, tmp_path):
    from PIL import Image, ImageStat

    lake, _ = reported_lake
    assert _chromium(), "CI_REQUIRE_CHROMIUM is set but chromium is missing"
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1100,3000",
            f"--screenshot={shot}",
            (lake / "reports" / "latest" / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as img:
        stat = ImageStat.Stat(img.convert("L"))
        colours = len(img.convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert stat.stddev[0] > 10 and colours > 200  # text, plots and thumbnails, not a blank page


def test_serve_runs_on_its_own_schedule_then_stops_cleanly(collection, tmp_path):
    source, _ = collection
    lake = tmp_path / "lake"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # serve must start its own server
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            str(source),
            "--interval",
            "10",
            "--lake",
            str(lake),
            "--weights",
            "random",
            "--backbone",
            "mobilenet_v1_0.25_128",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (lake / "reports" / "latest" / "index.html").is_file():  # a run's last step
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no scheduled run finished in 300 s"
            time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "starting a local Prefect server" in output
    assert list((lake / "runs").glob("*-1-finished.parquet"))
    port = re.search(r"Prefect UI at http://127.0.0.1:(\d+)", output).group(1)
    import socket

    with socket.socket() as probe:  # the server it started is gone
        assert probe.connect_ex(("127.0.0.1", int(port))) != 0
