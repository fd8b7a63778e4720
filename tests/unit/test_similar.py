"""Query by example, the parts below the CLI: group choice, where weights come from, reading and
decoding the queries under the run's guards, the scan."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
import time

import numpy as np
import pytest

from embedlake.tasks.lake import GroupKey
from embedlake.tasks.similar import (
    ChosenGroup,
    QueryImageError,
    SimilarError,
    _is_global,
    choose_groups,
    decode_queries,
    download,
    weights_source_for,
)
from embedlake.tasks.topk import top_k
from embedlake.tasks.weights import WeightsError, WeightsSource
from tests.conftest import jpeg_bytes, photo

pytestmark = pytest.mark.unit

MOBILE = "mobilenet_v1_0.25_128"


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def nearest_in_blocks(queries, blocks, k) -> list[list[tuple[str, float]]]:
    """top_k's answer (the search `similar` makes) as (image_id, similarity) lists per query."""
    ids, sims = top_k(queries, blocks, k)
    return [
        [(i, float(s)) for i, s in zip(row, row_s, strict=True) if i is not None]
        for row, row_s in zip(ids, sims, strict=True)
    ]


@pytest.mark.parametrize("block", [1, 7, 50, 1000])
@pytest.mark.parametrize("k", [1, 5, 60])
def test_blocked_scan_equals_brute_force(block, k):
    rng = np.random.default_rng(block * 100 + k)
    keys, queries = _unit(rng, 50), _unit(rng, 3)
    ids = [f"img{i:02d}" for i in range(50)]
    blocks = [(ids[i : i + block], keys[i : i + block]) for i in range(0, 50, block)]
    found = nearest_in_blocks(queries, blocks, k)
    scores = queries @ keys.T
    for q in range(3):
        order = np.argsort(-scores[q])[:k]
        assert [i for i, _ in found[q]] == [ids[j] for j in order]
        assert np.allclose([s for _, s in found[q]], scores[q, order], atol=1e-6)


def test_an_image_stored_twice_counts_once():
    rng = np.random.default_rng(0)
    keys, query = _unit(rng, 4), _unit(rng, 1)
    keys[3] = query[0]
    ids = ["a", "b", "c", "d"]
    # image d is in two parts (a duplicate row the embeddings view would hide)
    found = nearest_in_blocks(query, [(ids, keys), (["d"], keys[3:])], 3)
    assert [i for i, _ in found[0]].count("d") == 1
    assert found[0][0][0] == "d" and found[0][0][1] == pytest.approx(1.0)
    assert nearest_in_blocks(query, [], 3) == [[]]


STORED = [
    GroupKey("xception", "random-seed0:aaaa", "fp32"),
    GroupKey("xception", "random-seed0:aaaa", "bf16"),
    GroupKey("xception", "file-x.safetensors:bbbb", "fp32"),
    GroupKey(MOBILE, "random-seed0:cccc", "bf16"),
]


def _run(ids: dict[str, str], precision: str, **params) -> dict:
    return {"weights": ids, "precision": precision, "params": params}


def test_the_latest_finished_run_chooses_the_group():
    runs = [  # newest first
        _run({"xception": "file-x.safetensors:bbbb"}, "fp32", weights="xception=/w/x.safetensors"),
        _run({"xception": "random-seed0:aaaa", MOBILE: "random-seed0:cccc"}, "bf16"),
    ]
    groups = choose_groups(STORED, runs)
    assert [chosen.key for chosen in groups] == [
        GroupKey(MOBILE, "random-seed0:cccc", "bf16"),
        GroupKey("xception", "file-x.safetensors:bbbb", "fp32"),
    ]
    assert groups[1].run_params == {"weights": "xception=/w/x.safetensors"}
    # the older run's xception: --weights picks it, at that run's precision
    picked = choose_groups(STORED, runs, ["xception"], {"xception": "random-seed0:aaaa"})
    assert [chosen.key for chosen in picked] == [GroupKey("xception", "random-seed0:aaaa", "bf16")]


def test_groups_without_a_finished_run():
    # one group per backbone: taken; several: the user must choose
    (only,) = choose_groups(STORED, [], [MOBILE])
    assert only.key == GroupKey(MOBILE, "random-seed0:cccc", "bf16")
    with pytest.raises(SimilarError, match="none from a finished run: choose with --weights"):
        choose_groups(STORED, [], ["xception"])


def test_backbones_and_weights_the_lake_lacks_are_refused():
    with pytest.raises(SimilarError, match=r"no mobilenet_v1 embeddings \(it holds: mobilenet"):
        choose_groups(STORED, [], ["mobilenet_v1"])
    with pytest.raises(SimilarError, match=r"made with weights random-seed0:dddd \(it holds: "):
        choose_groups(STORED, [], [MOBILE], {MOBILE: "random-seed0:dddd"})
    with pytest.raises(SimilarError, match="the lake holds no embeddings yet"):
        choose_groups([], [])


def test_weights_source_read_off_the_weights_id(tmp_path):
    random = ChosenGroup(GroupKey(MOBILE, "random-seed0:cccc", "fp32"))
    assert weights_source_for(random).kind == "random"
    imagenet = ChosenGroup(GroupKey("xception", "legacy_xception.tf_in1k:abcd", "fp16"))
    assert weights_source_for(imagenet) == WeightsSource("imagenet")
    with pytest.raises(WeightsError, match="origin embedlake does not know"):
        weights_source_for(ChosenGroup(GroupKey("xception", "somewhere:1", "fp32")))


def test_a_weights_file_the_lake_names_is_never_opened(tmp_path):
    # the path a run recorded may name any file of the reader's (a FIFO, /dev/zero, a secret):
    # the caller names the weights file, the lake does not
    fifo = tmp_path / "xception.safetensors"
    os.mkfifo(fifo)
    for given in (str(tmp_path), f"{MOBILE}=/gone.pt,xception={fifo}", "/dev/zero"):
        key = GroupKey("xception", "file-xception.safetensors:1", "fp32")
        with pytest.raises(WeightsError, match="opens no path a lake names: pass --weights "):
            weights_source_for(ChosenGroup(key, {"weights": given}))


@pytest.fixture(scope="module")
def plans():
    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.decode import crop_plans

    return crop_plans({n: resolve_backbone(n).data_config() for n in (MOBILE, "xception")})


def test_decode_queries_cuts_the_runs_crops_or_says_why(tmp_path, plans):
    from embedlake.tasks.decode import decode_for_backbones

    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(photo("chelsea.png")))
    crops, again = decode_queries([str(good), f"file://{good}"], plans, max_pixels=10**8)
    assert crops[MOBILE].shape == (128, 128, 3) and crops["xception"].shape == (299, 299, 3)
    expected = decode_for_backbones(good, plans, 10**8)
    assert all(np.array_equal(crops[n], expected[n]) for n in expected)
    assert all(np.array_equal(again[n], expected[n]) for n in expected)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.jpg")
    for name, code in [
        ("missing.jpg", "unreadable: FileNotFoundError"),
        ("empty.jpg", "empty_file: "),
        ("fifo.jpg", "unreadable: not a regular file"),  # not opened for reading: no hang
        ("bad.jpg", "not_an_image: "),  # the code discover gives the same bytes
    ]:
        with pytest.raises(QueryImageError, match=f"{name}: {code}"):
            decode_queries([str(good), str(tmp_path / name)], plans)
    with pytest.raises(QueryImageError, match="/dev/zero: unreadable: not a regular file"):
        decode_queries(["/dev/zero"], plans)
    with pytest.raises(QueryImageError, match="good.jpg: decompression_bomb: "):
        decode_queries([str(good)], plans, max_pixels=100)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "memory://a.jpg",
        "zip://a.jpg::s3://bucket/photos.zip",
        "simplecache::https://example.com/a.jpg",
    ],
)
def test_urls_it_does_not_fetch_are_refused_before_any_read(url):
    with pytest.raises(SimilarError, match="only local files and http://, https://, s3://"):
        download(url)


@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata services
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_are_fetched_by_default(address, public):
    assert _is_global(address) is public


class _Handler(http.server.BaseHTTPRequestHandler):
    body = jpeg_bytes(photo("chelsea.png"))

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/elsewhere":
            self.send_response(302)
            self.send_header("Location", "/photo.jpg")
            self.end_headers()
            return
        if self.path != "/photo.jpg":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_is_capped_and_private_addresses_need_the_flag(http_server):
    with pytest.raises(SimilarError, match="127.0.0.1 is not a public address"):
        download(f"{http_server}/photo.jpg")
    with pytest.raises(SimilarError, match=r"localhost \((127\.0\.0\.1|::1)\) is not a public"):
        download(f"{http_server}/photo.jpg".replace("127.0.0.1", "localhost"))
    got = download(f"{http_server}/elsewhere", allow_private_urls=True)
    assert got == _Handler.body
    with pytest.raises(QueryImageError, match="unreadable: larger than 1000 bytes"):
        download(f"{http_server}/photo.jpg", allow_private_urls=True, max_bytes=1000)
    with pytest.raises(QueryImageError, match="missing.jpg: unreadable: HTTP 404"):
        download(f"{http_server}/missing.jpg", allow_private_urls=True)


def test_a_server_that_answers_drop_by_drop_is_cut_at_the_deadline():
    server = socket.create_server(("127.0.0.1", 0))

    def drip():
        with contextlib.suppress(OSError):  # the client hung up, or never came
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(600):  # a header line every 0.1 s: no single read waits long
                    conn.sendall(b"X: y\r\n")
                    time.sleep(0.1)

    threading.Thread(target=drip, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/a.jpg"
    started = time.monotonic()
    with server, pytest.raises(QueryImageError, match="timeout: not downloaded within 2 s"):
        download(url, timeout=2, allow_private_urls=True)
    assert time.monotonic() - started < 2 + 20  # room for a loaded machine


def test_fp16_lakes_are_queried_at_fp32_on_a_cpu_and_said_so(monkeypatch):
    import torch

    from embedlake.tasks.engine import plan_query

    def precision_here(held, device):
        plan, note = plan_query(device, held)
        assert plan.device == device
        return plan.precision, note

    with monkeypatch.context() as cuda_here:  # the plan, as on a machine with a GPU
        cuda_here.setattr(torch.cuda, "is_available", lambda: True)
        assert precision_here("fp16", "cuda") == ("fp16", None)
    assert precision_here("bf16", "cpu") == ("bf16", None)
    precision, note = precision_here("fp16", "cpu")
    assert precision == "fp32" and "fp16" in note
