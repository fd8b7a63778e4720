"""Large JPEGs decode at a reduced DCT scale; everything else keeps timm's own stages, bit-exact."""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import pytest
from PIL import Image

from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.decode import crop_plans, decode_for_backbones, draft_jpeg, resize_centre_crop
from embedlake.tasks.discover import DEFAULT_MAX_PIXELS, probe_file
from tests.conftest import jpeg_bytes, photo

pytestmark = pytest.mark.unit

BOTH = ["mobilenet_v1", "xception"]


def _plans(names):
    return crop_plans({n: resolve_backbone(n).data_config() for n in names})


def _jpeg(size: tuple[int, int]) -> bytes:
    return jpeg_bytes(photo("chelsea.png").resize(size, Image.BICUBIC), 90)


@pytest.mark.parametrize(
    ("names", "size", "decoded"),
    [
        (BOTH, (4032, 3024), (504, 378)),  # 1/8: 378 still covers xception's 333
        (BOTH, (3024, 4032), (378, 504)),
        (BOTH, (2000, 1500), (500, 375)),  # 1/8 would be 187: 1/4
        (BOTH, (1300, 700), (650, 350)),
        (BOTH, (700, 660), (700, 660)),  # 1/2 would be 330 < 333: full size
        (["mobilenet_v1"], (2100, 1600), (525, 400)),  # its own 256: 1/4, not xception's 1/2
        (["mobilenet_v1_0.25_128"], (4032, 3024), (504, 378)),  # never below 1/8
    ],
)
def test_draft_scale_is_the_smallest_that_covers_every_resize(names, size, decoded):
    configs = {n: resolve_backbone(n).data_config() for n in names}
    target = max(p.resize_short_side for p in crop_plans(configs))
    # from each backbone's own config (timm: floor(input size / crop_pct)), not a constant
    assert target == max(math.floor(c["input_size"][-1] / c["crop_pct"]) for c in configs.values())
    with Image.open(io.BytesIO(_jpeg(size))) as img:
        reduced = draft_jpeg(img, target)
        img.load()
        assert img.size == decoded
        assert reduced == (decoded != size)
        assert min(img.size) >= target


def test_metadata_and_image_id_describe_the_file_not_the_reduced_decode(tmp_path):
    data = _jpeg((4032, 3024))
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    crops = decode_for_backbones(path, _plans(BOTH), DEFAULT_MAX_PIXELS)
    assert {k: v.shape for k, v in crops.items()} == {
        "mobilenet_v1": (224, 224, 3),
        "xception": (299, 299, 3),
    }
    row = probe_file(path, tmp_path)
    assert (row["width"], row["height"]) == (4032, 3024)
    assert row["image_id"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("size", "fmt"),
    [((640, 480), "JPEG"), ((700, 660), "JPEG"), ((1600, 1200), "PNG"), ((1200, 1600), "WEBP")],
)
def test_small_jpegs_and_other_formats_keep_timms_stages_bit_exact(tmp_path, size, fmt):
    img = photo("astronaut.png").resize(size, Image.BICUBIC)
    path = tmp_path / f"img.{fmt.lower()}"
    img.save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    plans = _plans(BOTH)
    ours = decode_for_backbones(path, plans, DEFAULT_MAX_PIXELS)
    with Image.open(path) as reference:
        rgb = reference.convert("RGB")
    for plan in plans:
        np.testing.assert_array_equal(ours[plan.backbone], np.asarray(plan.stages(rgb)))


@pytest.mark.parametrize("size", [(504, 378), (378, 504), (500, 375), (650, 350), (525, 400)])
def test_box_crop_is_timms_resize_and_crop_up_to_pass_order(size):
    """The same geometry as Resize + CenterCrop; only Pillow's 8-bit pass order may differ."""
    img = photo("astronaut.png").resize(size, Image.BICUBIC)
    for plan in _plans([*BOTH, "mobilenet_v1_0.25_128"]):
        ours = np.asarray(resize_centre_crop(img, plan.resize_short_side, plan.crop_size))
        theirs = np.asarray(plan.stages(img))
        assert ours.shape == theirs.shape
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        assert diff.max() <= 4 and diff.mean() < 0.5, (plan.backbone, diff.max(), diff.mean())
