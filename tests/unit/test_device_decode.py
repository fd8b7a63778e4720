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
