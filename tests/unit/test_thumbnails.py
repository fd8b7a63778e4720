"""Thumbnails made by the decode that embeds an image: size, aspect, orientation, JPEG bytes;
the crops unchanged by them; none for a broken image; the device path's alike."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.decode import (
    THUMBNAIL_SIZE,
    crop_plans,
    decode_for_backbones,
    decode_image,
    thumbnail_size,
)
from embedlake.tasks.decode_pool import DecodeJob, iter_decoded
from embedlake.tasks.discover import DEFAULT_MAX_PIXELS
from tests.conftest import jpeg_bytes, photo

pytestmark = pytest.mark.unit

SMALL = "mobilenet_v1_0.25_128"


@pytest.fixture(scope="module")
def plans():
    return crop_plans({n: resolve_backbone(n).data_config() for n in ("mobilenet_v1", "xception")})


def _halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def _opened(data: bytes) -> Image.Image:
    assert data[:2] == b"\xff\xd8"  # a JPEG's start of image
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "JPEG" and img.mode == "RGB"
    return img


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (128, 96)),
        ((480, 640), (96, 128)),
        ((100, 50), (100, 50)),
        ((4000, 10), (128, 1)),
    ],
)
def test_the_long_side_becomes_128_aspect_kept_never_enlarged(plans, size, expected):
    assert thumbnail_size(*size) == expected
    data = jpeg_bytes(photo("astronaut.png").resize(size))
    _, thumb = decode_image(data, plans, DEFAULT_MAX_PIXELS, thumbnail=True)
    assert (thumb.width, thumb.height) == expected
    assert _opened(thumb.data).size == expected


def test_exif_orientation_is_applied_as_for_the_crops(plans):
    """Orientation 6: shown turned 90 degrees clockwise, so the stored left half is on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    _halves(640, 480).save(out, "JPEG", quality=95, exif=exif)
    crops, thumb = decode_image(out.getvalue(), plans, DEFAULT_MAX_PIXELS, thumbnail=True)
    img = np.asarray(_opened(thumb.data), dtype=int)
    assert img.shape == (128, 96, 3)
    assert img[10, 48, 0] > 200 and img[10, 48, 2] < 60  # top: red
    assert img[-10, 48, 2] > 200 and img[-10, 48, 0] < 60  # bottom: blue
    crop = crops["xception"].astype(int)
    assert crop[10, 150, 0] > 200 and crop[-10, 150, 2] > 200  # the crops see it the same way


def test_any_mode_becomes_an_rgb_jpeg(plans):
    rgba = Image.new("RGBA", (300, 200), (0, 128, 0, 0))  # transparent: white, as the crops
    out = io.BytesIO()
    rgba.save(out, "PNG")
    _, thumb = decode_image(out.getvalue(), plans, DEFAULT_MAX_PIXELS, thumbnail=True)
    img = _opened(thumb.data)
    assert img.size == (128, 85) and min(img.getpixel((60, 40))) > 245


@pytest.mark.parametrize("size", [(640, 480), (4032, 3024), (300, 200)])
def test_the_crops_are_the_same_with_a_thumbnail(plans, size):
    """A 12 MP JPEG's crops come from its drafted decode (504x378), with or without."""
    data = jpeg_bytes(photo("chelsea.png").resize(size))
    alone = decode_for_backbones(data, plans, DEFAULT_MAX_PIXELS)
    crops, thumb = decode_image(data, plans, DEFAULT_MAX_PIXELS, thumbnail=True)
    assert crops.keys() == alone.keys()
    for name, crop in alone.items():
        assert np.array_equal(crops[name], crop)
    assert max(thumb.width, thumb.height) == THUMBNAIL_SIZE


def test_a_thumbnail_alone_drafts_a_large_jpeg_to_its_own_size(plans):
    data = jpeg_bytes(photo("chelsea.png").resize((4032, 3024)))
    crops, thumb = decode_image(data, [], DEFAULT_MAX_PIXELS, thumbnail=True)
    assert crops == {} and (thumb.width, thumb.height) == (128, 96)
    _, with_crops = decode_image(data, plans, DEFAULT_MAX_PIXELS, thumbnail=True)
    diff = np.abs(
        np.asarray(_opened(thumb.data), dtype=int) - np.asarray(_opened(with_crops.data), dtype=int)
    )
    assert diff.mean() < 4  # from a 1/8 decode instead of 1/4: the same picture


def test_a_broken_image_gets_no_thumbnail_and_keeps_its_error(plans, tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(photo("astronaut.png")))
    broken = tmp_path / "truncated.jpg"
    broken.write_bytes(good.read_bytes()[:3000])
    jobs = [
        DecodeJob("good", good, "JPEG", thumbnail=True),
        DecodeJob("broken", broken, "JPEG", thumbnail=True),
        DecodeJob("only", good, "JPEG", thumbnail=True, crops=False),
        DecodeJob("plain", good, "JPEG"),
    ]
    out = {
        d.image_id: d
        for d in iter_decoded(jobs, plans, workers=0, timeout=30, max_pixels=DEFAULT_MAX_PIXELS)
    }
    assert out["broken"].error[0] == "truncated" and out["broken"].thumbnail is None
    assert out["good"].crops and _opened(out["good"].thumbnail.data).size == (128, 128)
    assert out["only"].crops == {} and not out["only"].embed and out["only"].thumbnail
    assert out["plain"].crops and out["plain"].thumbnail is None


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not __import__("torch").cuda.is_available(), reason="needs a CUDA device"
            ),
        ),
    ],
)
def test_the_device_path_makes_the_same_thumbnails(tmp_path, device):
    """torchvision's CPU decoder, and nvJPEG with the pinned copy behind the forward passes on
    CUDA: the thumbnails match Pillow's."""
    from embedlake.tasks.embed import Embedder, iter_embedded_batches
    from embedlake.tasks.weights import load_backbone, parse_weights_spec

    small = crop_plans({SMALL: resolve_backbone(SMALL).data_config()})
    loaded = [load_backbone(resolve_backbone(SMALL), parse_weights_spec("random", [SMALL])[SMALL])]
    jobs, pillow = [], {}
    for i, (name, size) in enumerate(
        [("astronaut.png", (640, 480)), ("chelsea.png", (300, 451)), ("coffee.png", (640, 480))]
    ):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(photo(name).resize(size), 92))
        jobs.append(DecodeJob(f"j{i}", path, "JPEG", thumbnail=i != 1))
        pillow[f"j{i}"] = decode_image(path, small, DEFAULT_MAX_PIXELS, thumbnail=True)[1]
    made, ok = {}, []
    for batch in iter_embedded_batches(
        jobs,
        Embedder(loaded, device, "fp32"),
        small,
        batch_size=2,
        workers=0,
        max_pixels=DEFAULT_MAX_PIXELS,
        decode_timeout=30,
        decode_on_device=True,
    ):
        ok += batch.ok_ids
        made.update(batch.thumbnails)
    assert sorted(ok) == ["j0", "j1", "j2"] and sorted(made) == ["j0", "j2"]
    for image_id, thumb in made.items():
        ours = np.asarray(_opened(thumb.data), dtype=int)
        theirs = np.asarray(_opened(pillow[image_id].data), dtype=int)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).mean() < 4  # torch's antialiased bicubic vs Pillow's
