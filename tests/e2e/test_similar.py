"""`embedlake similar`: query by example against a lake built by `embedlake run`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import cli_here, jpeg_bytes, photo, run_cli

pytestmark = pytest.mark.e2e

BACKBONES = ("mobilenet_v1_0.25_128", "mobilenet_v1_0.5_160")


@pytest.fixture(scope="module")
def lake(collection, tmp_path_factory, session_env, prefect_api) -> tuple[Path, dict[str, str]]:
    lake = tmp_path_factory.mktemp("similar") / "lake"
    backbones = [arg for name in BACKBONES for arg in ("--backbone", name)]
    # built in this process (the queries are the subject); the lake is what a user's run writes
    source = str(collection[0])
    options = ("--weights", "random", "--workers", "0", "--precision", "fp32", "--no-report")
    done = cli_here("run", source, "--lake", str(lake), *backbones, *options)
    assert done.returncode == 0, done.stderr
    return lake, session_env


def _listing(lake: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns) for p in lake.rglob("*")
    }


def _similar(lake: Path, env: dict[str, str], *args: str):
    """`embedlake similar ARGS --lake LAKE`, checking that it left the lake as it was."""
    before = _listing(lake)
    done = run_cli("similar", *args, "--lake", str(lake), env=env)
    assert _listing(lake) == before
    return done


def _similar_here(lake: Path, capfd, *args: str) -> subprocess.CompletedProcess:
    """`_similar` through the CLI's `main` in this process: the same parsing, one-line errors and
    exit status, without a subprocess importing torch again (the cases that guard against the
    lake or the query running code or exhausting the process stay in subprocesses)."""
    from embedlake.flows.cli import main

    before = _listing(lake)
    capfd.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        for handler in ("", "_FLOW_RUNS", "_TASK_RUNS"):  # main sets these for its process
            patch.setenv(f"PREFECT_LOGGING_HANDLERS_CONSOLE{handler}_LEVEL", "CRITICAL")
        code = main(["similar", *args, "--lake", str(lake)])
    out, err = capfd.readouterr()
    assert _listing(lake) == before
    return subprocess.CompletedProcess(["similar", *args], code, out, err)


def _copy(tmp_path: Path, name: str) -> Path:
    """A half-size copy of a lake photo, recompressed at JPEG quality 60."""
    img = photo(name)
    path = tmp_path / f"{name.split('.')[0]}_half_q60.jpg"
    path.write_bytes(jpeg_bytes(img.resize((img.width // 2, img.height // 2)), quality=60))
    return path


def test_a_resized_recompressed_copy_finds_its_original_first(lake, tmp_path, capfd):
    root, env = lake
    chelsea, coffee = _copy(tmp_path, "chelsea.png"), _copy(tmp_path, "coffee.png")
    done = _similar_here(root, capfd, str(chelsea), str(coffee), "--k", "3", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert list(rows[0]) == ["query", "backbone", "rank", "path", "image_id", "similarity"]
    assert len(rows) == 2 * len(BACKBONES) * 3
    firsts = {(r["query"], r["backbone"]): r for r in rows if r["rank"] == 1}
    for backbone in BACKBONES:
        for query, original in ((chelsea, "good/chelsea.jpg"), (coffee, "good/coffee.jpg")):
            first = firsts[(str(query), backbone)]
            assert first["path"] == original
            assert first["similarity"] > 0.99
    ranks = [(r["query"], r["backbone"], r["rank"]) for r in rows]
    assert ranks == sorted(ranks, key=lambda q: ([str(chelsea), str(coffee)].index(q[0]), q[1:]))


def test_a_lake_image_itself_gets_its_stored_embedding_back(lake, collection, capfd):
    # the same bytes, weights and precision: the stored embedding, so similarity 1 to rounding
    # (0.999 allows for a CUDA run, whose JPEGs nvJPEG decoded; the query goes through Pillow)
    root, env = lake
    query = collection[0] / "good" / "rocket.jpg"
    done = _similar_here(root, capfd, str(query), "--backbone", BACKBONES[1], "--k", "2")
    assert done.returncode == 0, done.stderr
    assert "good/rocket.jpg" in done.stdout and BACKBONES[0] not in done.stdout
    assert "(2 rows)" in done.stdout
    done = _similar_here(root, capfd, str(query), "--k", "1", "--format", "csv")
    rows = done.stdout.splitlines()
    assert rows[0] == '"query","backbone","rank","path","image_id","similarity"'
    for row in rows[1:]:
        assert '"good/rocket.jpg"' in row and float(row.split(",")[-1]) > 0.999
    assert len(rows) == 1 + len(BACKBONES)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "unreadable: FileNotFoundError"),
        (b"", "empty_file"),
        (b"not an image at all", "not_an_image"),
        ("truncated", "truncated"),
    ],
)
def test_a_broken_query_image_is_one_line(lake, tmp_path, content, message, capfd):
    root, env = lake
    query = tmp_path / "query.jpg"
    if content == "truncated":
        content = jpeg_bytes(photo("chelsea.png"))[:3000]
    if content is not None:
        query.write_bytes(content)
    done = _similar_here(root, capfd, str(query))
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("embedlake: error: query image") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_weights_that_did_not_make_the_lake_are_refused(lake, tmp_path, capfd):
    root, env = lake
    query = _copy(tmp_path, "chelsea.png")
    other = tmp_path / "other.safetensors"
    _save_random_weights(BACKBONES[0], seed=1, path=other)
    weights = f"{BACKBONES[0]}={other}"
    done = _similar_here(root, capfd, str(query), "--backbone", BACKBONES[0], "--weights", weights)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"embedlake: error: the lake holds no {BACKBONES[0]} embeddings made with weights "
        "file-other.safetensors:"
    )
    assert len(done.stderr.splitlines()) == 1
    done = _similar_here(root, capfd, str(query), "--backbone", "xception")
    assert done.returncode == 1
    assert "the lake holds no xception embeddings (it holds: mobilenet_v1_0.25_128, " in done.stderr


def test_reloaded_weights_must_reproduce_the_lakes_weights_id(lake, tmp_path, monkeypatch):
    from embedlake.tasks import similar
    from embedlake.tasks.weights import WeightsError, WeightsSource

    root, _ = lake
    changed = tmp_path / "changed.safetensors"
    _save_random_weights(BACKBONES[0], seed=1, path=changed)
    # as if the file a lake was made with had been overwritten since
    monkeypatch.setattr(similar, "weights_source_for", lambda g: WeightsSource("file", changed))
    with pytest.raises(WeightsError, match=r"made with weights random-seed0:\w+, but file weights"):
        similar.find_similar(root, [str(_copy(tmp_path, "chelsea.png"))], backbones=[BACKBONES[0]])


def _save_random_weights(name: str, seed: int, path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from embedlake.tasks.backbones import build_model, resolve_backbone

    torch.manual_seed(seed)
    save_file(build_model(resolve_backbone(name)).state_dict(), str(path))


# Lake data names no code: Pillow plugins come from the command line only.

ZEN = "Beautiful is better than ugly"


@pytest.fixture
def plugin_lake(lake, tmp_path) -> Path:
    """A copy of the lake whose runs say they loaded the plugins `this` and `os:abort`."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedlake.tasks.catalog import build_catalog

    copy = tmp_path / "lake"
    shutil.copytree(lake[0], copy)
    for part in sorted((copy / "runs").glob("*.parquet")):
        table = pq.read_table(part)
        params = []
        for text in table.column("params").to_pylist():
            given = json.loads(text) if text else {}
            params.append(json.dumps({**given, "pillow_plugins": ["this", "os:abort"]}))
        column = table.schema.get_field_index("params")
        pq.write_table(table.set_column(column, "params", pa.array(params, pa.string())), part)
    build_catalog(copy)
    return copy


@pytest.mark.heavy  # `similar` in subprocesses (torch imported in each): 20-30 s
def test_plugins_named_by_the_lake_are_never_loaded(plugin_lake, lake, tmp_path):
    _, env = lake
    query = _copy(tmp_path, "chelsea.png")
    done = _similar(plugin_lake, env, str(query), "--k", "1", "--format", "json")
    assert ZEN not in done.stdout + done.stderr
    assert done.returncode == 0, done.stderr  # not -SIGABRT: os.abort was never called
    assert all(json.loads(row)["path"] == "good/chelsea.jpg" for row in done.stdout.splitlines())
    note = "embedlake: note: the lake's runs used the Pillow plugins 'os:abort', 'this', "
    assert note in done.stderr and "--pillow-plugin NAME" in done.stderr
    # a query that needs a plugin is refused in one line that says which the run had
    slow = tmp_path / "query.slow"
    slow.write_bytes(b"SLOWIMG1" + bytes(64))
    done = _similar(plugin_lake, env, str(slow))
    assert ZEN not in done.stdout + done.stderr
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"embedlake: error: query image {slow}: not_an_image: ")
    assert "'os:abort', 'this'" in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.heavy  # `similar` in subprocesses (torch imported in each): 20-30 s
def test_plugins_named_on_the_command_line_decode_within_the_time_limit(lake, tmp_path):
    # tests.slow_plugin claims the file and then hangs in load(): the worker is killed
    root, env = lake
    slow = tmp_path / "query.slow"
    slow.write_bytes(b"SLOWIMG1" + bytes(64))
    args = ("--pillow-plugin", "tests.slow_plugin", "--decode-timeout", "2")
    done, _, _ = _watched(root, env, str(slow), *args)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"embedlake: error: query image {slow}: timeout: decoding took")
    assert len(done.stderr.splitlines()) == 1


# The run's guards on reading a query: regular files only, limits on time, bytes and pixels.


def _tree_rss(process) -> int:
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def _watched(lake: Path, env: dict[str, str], *args: str, max_rss: int = 3 << 30):
    """`embedlake similar ARGS --lake LAKE` with the peak RSS of its process tree, killed when
    that passes `max_rss` or after a generous deadline (so a regression fails, not the machine).
    Returns the finished process (stdout, stderr as text), its wall seconds and the peak RSS."""
    import psutil

    from tests.conftest import CLI

    before = _listing(lake)
    started = time.monotonic()
    child = subprocess.Popen(
        [*CLI, "similar", *args, "--lake", str(lake)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(process))
        if peak > max_rss or time.monotonic() - started > 300:
            for member in [*process.children(recursive=True), process]:
                with contextlib.suppress(psutil.Error):
                    member.kill()
            break
        time.sleep(0.05)
    out, err = child.communicate(timeout=60)
    seconds = time.monotonic() - started
    assert _listing(lake) == before
    return subprocess.CompletedProcess(child.args, child.returncode, out, err), seconds, peak


@pytest.mark.heavy  # `similar` in subprocesses (torch imported in each): 20-30 s
def test_a_fifo_or_a_device_is_refused_without_being_read(lake, tmp_path):
    root, env = lake
    fifo = tmp_path / "query.jpg"
    os.mkfifo(fifo)
    for query in (str(fifo), "/dev/zero"):
        done, _, peak = _watched(root, env, query)
        assert done.returncode == 1, (query, peak, done.stderr)
        assert done.stderr == f"embedlake: error: query image {query}: unreadable: " + (
            "not a regular file\n"
        )


@pytest.mark.heavy  # `similar` in subprocesses (torch imported in each): 20-30 s
def test_a_large_non_image_is_not_an_image_read_no_further_than_its_header(lake, tmp_path):
    root, env = lake
    baseline = _watched(root, env, str(_copy(tmp_path, "coffee.png")), "--k", "1")
    assert baseline[0].returncode == 0, baseline[0].stderr
    large = tmp_path / "large.bin"
    with large.open("wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB of zeros, no disk
    done, _, peak = _watched(root, env, str(large))
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"embedlake: error: query image {large}: not_an_image: ")
    # no copy of the file in memory: the peak stays near that of an ordinary query
    assert peak < baseline[2] + (512 << 20), (peak, baseline[2])


def _stalled_server() -> tuple[socket.socket, list[float]]:
    """A server on 127.0.0.1 that accepts and never answers; the list gets, per connection, the
    seconds from accept until the client hung up."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[float] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # the test closed the server
                return
            accepted = time.monotonic()
            with conn:
                conn.settimeout(600)
                with contextlib.suppress(OSError):
                    while conn.recv(65536):  # the request, then EOF when the client gives up
                        pass
            held.append(time.monotonic() - accepted)

    threading.Thread(target=serve, daemon=True).start()
    return server, held


@pytest.mark.heavy  # `similar` in subprocesses (torch imported in each): 20-30 s
def test_a_stalled_http_server_times_out_and_internal_addresses_need_a_flag(lake):
    root, env = lake
    server, held = _stalled_server()
    with server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/query.jpg"
        done, _, _ = _watched(root, env, url)
        assert done.returncode == 1, done.stderr
        assert done.stderr == (
            f"embedlake: error: query image {url}: 127.0.0.1 is not a public address "
            "(loopback, private, link-local, ...): pass --allow-private-urls to fetch from it\n"
        )
        assert held == []  # refused before connecting
        done, _, _ = _watched(root, env, url, "--allow-private-urls", "--decode-timeout", "3")
        assert done.returncode == 1, done.stderr
        assert done.stderr == (
            f"embedlake: error: query image {url}: timeout: not downloaded within 3 s\n"
        )
        deadline = time.monotonic() + 60
        while not held and time.monotonic() < deadline:  # the server thread sees the hang-up
            time.sleep(0.05)
        assert len(held) == 1 and held[0] < 3 + 10, held  # 3 s, with room for a loaded machine


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "simplecache::s3://b/a.jpg"])
def test_urls_of_other_schemes_are_refused(lake, url, capfd):
    root, _ = lake
    done = _similar_here(root, capfd, url)
    assert done.returncode == 1
    assert done.stderr.startswith(f"embedlake: error: query image {url}: only local files and ")
