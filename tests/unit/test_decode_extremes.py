"""Extreme aspect ratios: crops from a strip's central window, in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.decode import MAX_ASPECT, central_window, crop_plans, decode_for_backbones
from embedlake.tasks.device_decode import crops_on_device
from embedlake.tasks.discover import DEFAULT_MAX_PIXELS

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def plans():
    names = ["mobilenet_v1", "xception"]
    return crop_plans({n: resolve_backbone(n).data_config() for n in names})


@pytest.mark.parametrize(
    ("size", "box"),
    [
        ((640, 480), None),
        ((16 * 30, 30), None),  # at the limit: kept whole
        ((1, 20000), (0, 9992, 1, 10008)),
        ((20000, 1), (9992, 0, 10008, 1)),
        ((40, 2000), (0, 680, 40, 1320)),
    ],
)
def test_central_window(size, box):
    assert central_window(*size) == box
    if box:
        assert (box[2] - box[0]) * (box[3] - box[1]) == MAX_ASPECT * min(size) ** 2


def _smooth_strip(width: int, height: int) -> Image.Image:
    """Smooth colour waves one short side long: a sub-pixel shift of the centre costs little."""
    y, x = np.mgrid[0:height, 0:width]
    short = min(width, height)
    wave = 127.5 + 120 * np.sin(x / short * 3) * np.cos(y / short * 2.5)
    return Image.fromarray(np.stack([wave, wave[::-1], 255 - wave], -1).astype(np.uint8))


@pytest.mark.parametrize("size", [(30, 1500), (1500, 30), (17, 999)])
def test_strip_crops_match_the_uncut_pipeline(plans, tmp_path, size):
    img = _smooth_strip(*size)
    path = tmp_path / "strip.png"
    img.save(path)
    ours = decode_for_backbones(path, plans, DEFAULT_MAX_PIXELS)
    on_device = crops_on_device([torch.from_numpy(np.array(img)).permute(2, 0, 1)], plans)
    for plan in plans:
        uncut = np.asarray(plan.stages(img), dtype=np.float64)
        assert ours[plan.backbone].shape == uncut.shape
        # the same pixels up to the rounding of the centre (a few levels of 255 at most)
        assert np.abs(ours[plan.backbone] - uncut).mean() < 6
        assert np.abs(on_device[plan.backbone][0].numpy() - uncut).mean() < 6


def test_a_20000_pixel_strip_decodes_fast_in_little_memory(plans, tmp_path):
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for size in ((1, 20000), (20000, 1)):
        path = tmp_path / f"{size[0]}x{size[1]}.png"
        Image.linear_gradient("L").resize(size).save(path)
        started = time.perf_counter()
        crops = decode_for_backbones(path, plans, DEFAULT_MAX_PIXELS)
        assert {c.shape for c in crops.values()} == {(224, 224, 3), (299, 299, 3)}
        assert time.perf_counter() - started < 30  # minutes and gigabytes before the window
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500  # the whole strip resized to xception's 333 px short side is ~6 GB
