"""Shared fixtures: an isolated, offline environment and small generated collections."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

# Set before anything imports prefect or huggingface_hub: no network, no telemetry, no ~/.prefect.
# Each folder made here is this test process's and goes at its session's end.
_SESSION_DIRS = {
    name: tempfile.mkdtemp(prefix=f"embedlake-{tag}-")
    for name, tag in (
        ("PREFECT_HOME", "prefect"),
        # no model cache of this machine's: pretrained weights are absent on every machine alike
        ("HF_HOME", "hf"),
        ("TORCH_HOME", "torch"),
        # embedlake's cache (the measured precision choice, URL lakes' catalogs)
        ("EMBEDLAKE_CACHE", "cache"),
    )
}
os.environ.update(_SESSION_DIRS)
os.environ["HF_HUB_OFFLINE"] = "1"
for _override in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # these would win over HF_HOME
    os.environ.pop(_override, None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def pytest_unconfigure(config) -> None:
    """The session's temporary homes and cache go with it (they piled up in /tmp before)."""
    for folder in _SESSION_DIRS.values():
        shutil.rmtree(folder, ignore_errors=True)


PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def photo(name: str):
    """A real photo from scikit-image's bundled data, as an RGB PIL image."""
    from PIL import Image

    data = resources.files("skimage.data").joinpath(name).read_bytes()
    return Image.open(io.BytesIO(data)).convert("RGB")


def jpeg_bytes(img, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_collection(root: Path, n_photos: int = 4) -> dict[str, str]:
    """Good photos, a resized copy, an identical copy and broken files; returns path -> label."""
    labels = {}
    root.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS[:n_photos]:
        stem = name.split(".")[0]
        (root / "good").mkdir(exist_ok=True)
        (root / "good" / f"{stem}.jpg").write_bytes(jpeg_bytes(photo(name)))
        labels[f"good/{stem}.jpg"] = stem
    first = root / "good" / f"{PHOTOS[0].split('.')[0]}.jpg"
    (root / "copies").mkdir(exist_ok=True)
    (root / "copies" / "same_bytes.jpg").write_bytes(first.read_bytes())
    labels["copies/same_bytes.jpg"] = PHOTOS[0].split(".")[0]
    img = photo(PHOTOS[0])
    (root / "copies" / "smaller.jpg").write_bytes(
        jpeg_bytes(img.resize((img.width // 2, img.height // 2)), quality=70)
    )
    labels["copies/smaller.jpg"] = PHOTOS[0].split(".")[0]
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "truncated.jpg").write_bytes(first.read_bytes()[:3000])
    (root / "broken" / "readme.txt").write_text("not an image")
    return labels


def make_distinct_photos(root: Path, n: int) -> list[Path]:
    """`n` distinct JPEGs: crops of the bundled photos at varied offsets and sizes."""
    root.mkdir(parents=True, exist_ok=True)
    sources = [photo(name) for name in PHOTOS]
    paths = []
    for i in range(n):
        img = sources[i % len(sources)]
        step = i // len(sources)
        box = (7 * step, 5 * step, img.width - 3 * step, img.height - 9 * step)
        path = root / f"photo_{i:03d}.jpg"
        path.write_bytes(jpeg_bytes(img.crop(box).resize((320, 240)), quality=85))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    """(SOURCE, metadata.csv) of a small generated collection, shared read-only by tests."""
    root = tmp_path_factory.mktemp("collection")
    labels = make_collection(root / "images")
    meta = root / "metadata.csv"
    meta.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in labels.items()))
    return root / "images", meta


CLI = [sys.executable, "-m", "embedlake.flows.cli"]
SMALL_BACKBONE = "mobilenet_v1_0.25_128"  # the fastest backbone: flow tests that need one


def flow_params(source, lake, **extra):
    """A run's parameters for flow tests: the small MobileNet, random weights, decoding in the
    test process, and no report (~2 s a run; tests of the report pass no_report=False)."""
    from embedlake.tasks.params import RunParams

    extra.setdefault("no_report", True)
    extra.setdefault("backbones", [SMALL_BACKBONE])
    return RunParams(source=str(source), lake=str(lake), weights="random", workers=0, **extra)


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`embedlake ARGS...` in a subprocess, as a user runs it; output captured as text."""
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def cli_here(*args: str) -> subprocess.CompletedProcess:
    """`embedlake ARGS...` through the CLI's `main` in this process: the same parsing, one-line
    errors and exit status as `run_cli` without a subprocess's 10-15 s of imports. For commands
    that load nothing but the catalog (sql, query, queries, backbones), and for `run` (with
    `prefect_api`, and `--workers 0`) where a test reads the lake it makes. A test about the
    process itself (a signal, a hang, its memory, decode workers, code a lake names, the
    installed environment) runs it as a user does, in `run_cli`."""
    import contextlib

    from embedlake.flows.cli import main

    # text streams with a byte buffer under them, as sys.stdout has (csv and parquet write bytes)
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))
    with pytest.MonkeyPatch.context() as patch:
        for handler in ("", "_FLOW_RUNS", "_TASK_RUNS"):  # main sets these for its process
            patch.setenv(f"PREFECT_LOGGING_HANDLERS_CONSOLE{handler}_LEVEL", "CRITICAL")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's exit 2
                code = exc.code
    text = []
    for stream in (out, err):
        stream.flush()
        text.append(stream.buffer.getvalue().decode())
    return subprocess.CompletedProcess(["embedlake", *args], code, *text)


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for the whole session; yields its API URL for subprocesses."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # no flow-run heartbeats in this process: a finishing flow waits up to a second for the
    # heartbeat thread's sleep, about 0.6 s per in-process run here (runs in subprocesses, as a
    # user's, keep them)
    with (
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings(updates={"flows.heartbeat_frequency": None}),
    ):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def session_env(prefect_api) -> dict[str, str]:
    """The one environment for `embedlake` subprocesses: offline, the session's Prefect server,
    no default lake. Module fixtures use it; a test that changes it takes `cli_env` instead."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = prefect_api
    env.pop("EMBEDLAKE_LAKE", None)
    return env


@pytest.fixture
def cli_env(session_env) -> dict[str, str]:
    """`session_env`, a copy of it this test may change."""
    return dict(session_env)


@dataclass(frozen=True)
class PipelineLake:
    """A lake `embedlake run` built, and that run's outcome (returncode, stdout, stderr)."""

    path: Path
    run: subprocess.CompletedProcess
    env: dict[str, str]


@pytest.fixture(scope="session")
def pipeline_lake(collection, session_env, tmp_path_factory) -> PipelineLake:
    """The shared collection run once through `embedlake run`: the default backbones
    (mobilenet_v1, xception), random weights, the sidecar metadata, the default decode workers.
    Through the CLI's `main` in this process (`cli_here`: the same parsing, output and exit
    status, without a subprocess's imports); tests/e2e/test_cli.py runs the same command in a
    subprocess, as a user does, in the heavy tier.

    Shared by every test that only reads a lake, so it must stay as built: a test that writes to
    a lake (a rerun, a report, a crafted part) works on `copy_lake(pipeline_lake.path, ...)`. The
    security tests hash the lakes they read before and after, and would see another's write.
    """
    source, meta = collection
    lake = tmp_path_factory.mktemp("pipeline") / "lake"
    done = cli_here(
        *("run", str(source), "--lake", str(lake), "--metadata", str(meta)),
        *("--weights", "random"),
    )
    assert done.returncode == 0, done.stderr
    return PipelineLake(lake, done, session_env)


def copy_lake(lake: Path, to: Path) -> Path:
    """A copy of `lake` at `to` for a test that writes (a lake answers wherever it is copied)."""
    shutil.copytree(lake, to, symlinks=True)
    return to


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP endpoint on localhost (moto's server); yields the env that points s3fs at it.

    Dummy credentials and no AWS config files, so nothing here can reach the real AWS.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    server.stop()


def s3_filesystem(env: dict[str, str]):
    """An s3fs filesystem on the test server, independent of this process's environment."""
    import s3fs

    return s3fs.S3FileSystem(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path) -> dict[str, str]:
    """This process pointed at the test S3 server, with embedlake's cache under tmp_path."""
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EMBEDLAKE_CACHE", str(tmp_path / "cache"))
    return s3_server


def as_written_before_scores(lake_dir: Path, part: str, name: str | None = None) -> None:
    """A neighbours part as embedlake wrote it before the lists had scores parts (without its
    rows' `version` column), renamed to `name` (a legacy `<group>.parquet`, say)."""
    import pyarrow.parquet as pq

    folder = Path(lake_dir) / "neighbors"
    rows = pq.read_table(folder / part)
    if "version" in rows.column_names:
        rows = rows.drop_columns(["version"])
    (folder / part).unlink()
    pq.write_table(rows, folder / (name or part))
