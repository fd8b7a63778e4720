"""Device-side JPEG decoding (run here with torchvision's CPU decoder; same code on CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.decode import crop_plans, decode_for_backbones
from embedlake.tasks.device_decode import decode_jpegs_on_device, resized_size
from embedlake.tasks.discover import DEFAULT_MAX_PIXELS
from tests.conftest import PHOTOS, jpeg_bytes, photo

pytestmark = pytest.mark.unit

NAMES = ["mobilenet_v1", "xception"]


@pytest.fixture(scope="module")
def plans():
    return crop_plans({n: resolve_backbone(n).data_config() for n in NAMES})


def test_resize_geometry_matches_torchvision():
    from torchvision.transforms import functional as TF

    for h, w in [(480, 640), (640, 480), (333, 333), (301, 1000)]:
        expected = TF._compute_resized_output_size((h, w), size=[256])
        assert list(resized_size(h, w, 256)) == expected


def test_device_crops_are_close_to_pillows(plans, tmp_path):
    payloads, paths = [], []
    for name in PHOTOS[:3]:
        data = jpeg_bytes(photo(name), 92)
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        payloads.append(data)
        paths.append(path)
    crops, ok, refused = decode_jpegs_on_device(payloads, "cpu", plans)
    assert ok == [0, 1, 2] and refused == []
    for i, path in enumerate(paths):
        pillow = decode_for_backbones(path, plans, DEFAULT_MAX_PIXELS)
        for name in NAMES:
            ours = crops[name][i].numpy().astype(float)
            assert ours.shape == pillow[name].shape
            # libjpeg-turbo vs Pillow's libjpeg IDCT and torch vs Pillow bicubic: a few levels
            assert np.abs(ours - pillow[name]).mean() < 3.0


def test_refused_files_are_reported_not_dropped(plans):
    good = jpeg_bytes(photo(PHOTOS[0]))
    crops, ok, refused = decode_jpegs_on_device([good, b"\xff\xd8 not really", good], "cpu", plans)
    assert ok == [0, 2] and refused == [1]
    assert crops["xception"].shape == (2, 299, 299, 3) and crops["xception"].dtype == torch.uint8


def test_device_path_accounts_for_every_file(plans, tmp_path):
    """JPEGs through the decoding thread, the rest and nvJPEG's refusals through Pillow."""
    from embedlake.tasks.decode_pool import DecodeJob
    from embedlake.tasks.weights import load_backbone, parse_weights_spec

    jobs = []
    for i, name in enumerate(PHOTOS[:5]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(photo(name)))
        jobs.append(DecodeJob(f"j{i}", path, "JPEG"))
    png = tmp_path / "p.png"
    photo(PHOTOS[0]).save(png)
    jobs.append(DecodeJob("png", png, "PNG"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
    jobs.append(DecodeJob("bad", bad, "JPEG"))
    sources = parse_weights_spec("random", ["mobilenet_v1_0.25_128"])
    loaded = [
        load_backbone(resolve_backbone("mobilenet_v1_0.25_128"), sources["mobilenet_v1_0.25_128"])
    ]
    small = crop_plans(
        {"mobilenet_v1_0.25_128": resolve_backbone("mobilenet_v1_0.25_128").data_config()}
    )
    ok, errors = _outcome(jobs, loaded, small, batch_size=2, decode_on_device=True)
    assert sorted(ok) == ["j0", "j1", "j2", "j3", "j4", "png"] and list(errors) == ["bad"]


def _outcome(jobs, loaded, plans, **options):
    """(ok image_ids, {image_id: error_code}) of embedding `jobs` on the CPU, no workers."""
    from embedlake.tasks.embed import Embedder, iter_embedded_batches

    ok, errors = [], {}
    for batch in iter_embedded_batches(
        jobs,
        Embedder(loaded, "cpu", "fp32"),
        plans,
        workers=0,
        max_pixels=DEFAULT_MAX_PIXELS,
        decode_timeout=30,
        **options,
    ):
        ok += batch.ok_ids
        errors.update({e[0]: e[1] for e in batch.errors})
    return ok, errors


def test_a_file_gone_since_discovery_is_an_unreadable_row_not_a_failed_run(plans, tmp_path):
    """Read by the device path's threads, then by the Pillow workers: an error row either way."""
    from embedlake.tasks.decode_pool import DecodeJob
    from embedlake.tasks.weights import load_backbone, parse_weights_spec

    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(photo("astronaut.png")))
    jobs = [DecodeJob("good", good, "JPEG"), DecodeJob("gone", tmp_path / "gone.jpg", "JPEG")]
    names = [p.backbone for p in plans]
    sources = parse_weights_spec("random", names)
    loaded = [load_backbone(resolve_backbone(n), sources[n]) for n in names]
    for on_device in (True, False):
        ok, errors = _outcome(jobs, loaded, plans, batch_size=4, decode_on_device=on_device)
        assert ok == ["good"] and errors == {"gone": "unreadable"}, (on_device, ok, errors)
