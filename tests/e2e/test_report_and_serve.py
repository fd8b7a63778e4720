"""The run report (structure, no remote references, rendered in headless Chromium) and
`embedlake serve` producing scheduled runs on its own."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import CLI, cli_here, copy_lake

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

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
def reported_lake(pipeline_lake, collection, tmp_path_factory, prefect_api):
    """The session's lake (one run, one report), copied since these tests rebuild its reports,
    and run a second time (in this process: nothing new to embed, a second report) so "what
    changed" has something to compare."""
    source, meta = collection
    lake = copy_lake(pipeline_lake.path, tmp_path_factory.mktemp("report") / "lake")
    done = cli_here(
        *("run", str(source), "--lake", str(lake), "--metadata", str(meta)),
        *("--weights", "random", "--workers", "0"),
    )
    assert done.returncode == 0, done.stderr
    return lake, pipeline_lake.env


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
    # the second run read the same files: every image kept, and both backbones' sampled
    # centroids where they were
    latest = lake / "reports" / "latest"
    changes = dict(_csv_rows(latest / "changes.csv"))
    assert changes["added"] == changes["removed"] == "0" and int(changes["kept"]) > 0
    shifts = dict(_csv_rows(latest / "centroid_shift.csv"))
    assert set(shifts) == {"mobilenet_v1", "xception"}
    assert all(abs(float(v)) < 1e-6 for v in shifts.values())


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))[1:]


def test_a_collection_read_once_or_per_query_gives_the_same_report(reported_lake, monkeypatch):
    from embedlake.tasks import report

    lake, _ = reported_lake
    tables = {}
    for limit in (report.READ_ONCE_ROWS, 0):  # 0: every section resolves the view, as at 10 M
        monkeypatch.setattr(report, "READ_ONCE_ROWS", limit)
        done = report.build_report(lake)
        assert done["summary"]["collection_read_once"] is (limit > 0)
        folder = Path(done["path"]).parent
        tables[limit] = {p.name: p.read_text() for p in folder.glob("*.csv")}
    assert tables[0] == tables[report.READ_ONCE_ROWS] and "outliers.csv" in tables[0]


def test_report_command_rebuilds_it(reported_lake):
    lake, _ = reported_lake
    shutil.rmtree(lake / "reports")
    done = cli_here("report", "--lake", str(lake))  # test_hostile_lake runs one in a subprocess
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


class Served:
    """`embedlake serve` in a subprocess (its own session, like a terminal's job), isolated under
    tmp_path: Prefect's client home, embedlake's cache (where the server's home goes), the lake."""

    def __init__(self, tmp_path: Path, source: Path, *args: str):
        self.lake = tmp_path / "lake"
        self.cache = tmp_path / "cache"
        self.log = tmp_path / "serve.log"
        env = dict(os.environ, EMBEDLAKE_CACHE=str(self.cache))
        env.pop("PREFECT_API_URL", None)  # serve must start its own server
        env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
        env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [*CLI, "serve", str(source), "--lake", str(self.lake), "--weights", "random"]
                + ["--backbone", "mobilenet_v1_0.25_128", *args],
                env=env,
                cwd=REPO,  # the flow run imports tests.slow_plugin from here
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen: list[psutil.Process] = []

    @property
    def output(self) -> str:
        return self.log.read_text()

    def family(self) -> list[psutil.Process]:
        """serve, every process under it, and every process in the sessions they lead (the
        server's, the runner's), so one that left its parent is counted too."""
        try:
            root = psutil.Process(self.proc.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        sessions = set()
        for member in members:
            with contextlib.suppress(OSError):
                sessions.add(os.getsid(member.pid))
        for process in psutil.process_iter():
            with contextlib.suppress(OSError):
                if os.getsid(process.pid) in sessions and process not in members:
                    members.append(process)
        self.seen += members
        return members

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"serve exited before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
            time.sleep(0.2)

    def stop_and_check(self, signum: int, to_group: bool = True) -> None:
        """Send `signum`; serve must exit within 10 s leaving no process it started alive."""
        family = self.family()
        assert len(family) > 1, "serve started nothing"
        sent = time.monotonic()
        if to_group:
            os.killpg(self.proc.pid, signum)  # what a terminal's Ctrl-C does
        else:
            self.proc.send_signal(signum)  # what a service manager's stop does
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running 10 s after signal {signum}")
        took = time.monotonic() - sent
        print(f"serve exited {took:.1f} s after signal {signum}")
        survivors = [p for p in family if _alive(p)]
        assert not survivors, [(p.pid, p.cmdline()) for p in survivors]
        assert took < 10, took

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for process in self.seen + self.family():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.proc.wait()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def start_serve(tmp_path):
    """Start `embedlake serve`; whatever it leaves running is killed after the test."""
    started: list[Served] = []

    def start(source: Path, *args: str) -> Served:
        started.append(Served(tmp_path, source, *args))
        return started[-1]

    yield start
    for served in started:
        served.cleanup()


def _runs(lake: Path, stage: str) -> list[Path]:
    return sorted((lake / "runs").glob(f"*-{stage}.parquet"))


def _api_status(url: str, auth: str | None) -> int:
    """The status of a read of the API's flow runs, with basic auth `auth` or none."""
    request = urllib.request.Request(f"{url}/api/flow_runs/filter", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.heavy  # serve starts its own Prefect server (and runs)
def test_serve_runs_on_its_own_schedule_then_stops_cleanly(collection, start_serve):
    source, _ = collection
    served = start_serve(source, "--interval", "10")
    served.wait_for(
        lambda: (served.lake / "reports" / "latest" / "index.html").is_file(),  # a run's last step
        300,
        "a scheduled run finished",
    )
    # the API it started answers only with the secret in its home (mode 0600), not to anyone local
    url = re.search(r"Prefect UI at (http://127.0.0.1:\d+)", served.output).group(1)
    (auth_file,) = (served.cache / "prefect").glob("*/api-auth")
    assert auth_file.stat().st_mode & 0o777 == 0o600
    assert _api_status(url, None) == 401
    assert _api_status(url, "embedlake:guess") == 401
    assert _api_status(url, auth_file.read_text().strip()) == 200
    served.stop_and_check(signal.SIGINT)
    output = served.output
    assert "starting a local Prefect server" in output
    assert _runs(served.lake, "1-finished")
    port = re.search(r"Prefect UI at http://127.0.0.1:(\d+)", output).group(1)
    with socket.socket() as probe:  # the server it started is gone
        assert probe.connect_ex(("127.0.0.1", int(port))) != 0
    # Prefect's home (its database) is in embedlake's cache, one per lake, not in the lake
    homes = list((served.cache / "prefect").glob("*/prefect.db"))
    assert len(homes) == 1
    assert (homes[0].parent / "lake.txt").read_text().strip() == str(served.lake)
    prefect_files = [
        p for p in served.lake.rglob("*") if "prefect" in p.name.lower() or p.suffix == ".db"
    ]
    assert not prefect_files


@pytest.mark.heavy  # serve starts its own Prefect server (and runs)
def test_serve_stops_within_seconds_of_sigterm_mid_run_and_kills_the_run(
    collection, start_serve, tmp_path
):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("astronaut.jpg", "chelsea.jpg"):
        shutil.copy(collection[0] / "good" / name, source / name)
    (source / "hangs.slow").write_bytes(b"SLOWIMG1" + bytes(64))  # its decoder never returns
    served = start_serve(
        source,
        "--interval",
        "10",
        "--pillow-plugin",
        "tests.slow_plugin",
        "--decode-timeout",
        "3600",
    )

    def embedding() -> bool:  # a run started, not finished, its decode workers up
        forkserver = [p for p in served.family() if "multiprocessing.forkserver" in _cmd(p)]
        return bool(_runs(served.lake, "0-started")) and len(forkserver) >= 2

    served.wait_for(embedding, 300, "a flow run decoding")
    served.stop_and_check(signal.SIGTERM, to_group=False)
    # killed, not left to record itself failed: the next run marks it aborted and redoes it
    assert not list((served.lake / "runs").glob("*-1-*.parquet"))


@pytest.mark.heavy  # serve starts its own Prefect server (and runs)
def test_serve_stops_within_seconds_of_sigint_while_its_server_starts(collection, start_serve):
    source, _ = collection
    served = start_serve(source, "--interval", "10")
    served.wait_for(
        lambda: any("server" in _cmd(p) and "start" in _cmd(p) for p in served.family()),
        120,
        "the local Prefect server process started",
    )
    assert "Prefect UI at" not in served.output  # not answering yet
    served.stop_and_check(signal.SIGINT)


def _cmd(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""
