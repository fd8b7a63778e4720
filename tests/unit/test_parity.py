"""Preprocessing and embedding parity with timm's own eval pipeline, on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.decode import crop_plans, decode_for_backbones
from embedlake.tasks.discover import DEFAULT_MAX_PIXELS
from embedlake.tasks.embed import Embedder, cpu_has_native_bf16
from embedlake.tasks.weights import load_backbone, parse_weights_spec
from tests.conftest import PHOTOS, jpeg_bytes, photo

pytestmark = pytest.mark.unit

BACKBONES = ["mobilenet_v1", "xception"]


@pytest.fixture(scope="module")
def loaded():
    sources = parse_weights_spec("random", BACKBONES)
    return [load_backbone(resolve_backbone(n), sources[n]) for n in BACKBONES]


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS[:3]:
        path = folder / f"{name.split('.')[0]}.jpg"
        path.write_bytes(jpeg_bytes(photo(name)))
        paths.append(path)
    return paths


def _timm_input(path, name):
    transform = create_transform(**resolve_backbone(name).data_config(), is_training=False)
    return transform(Image.open(path).convert("RGB"))


def _our_crops(paths, names):
    plans = crop_plans({n: resolve_backbone(n).data_config() for n in names})
    decoded = [decode_for_backbones(p, plans, DEFAULT_MAX_PIXELS) for p in paths]
    return {n: torch.from_numpy(np.stack([d[n] for d in decoded])) for n in names}


@pytest.mark.parametrize("name", BACKBONES)
def test_crops_equal_timm_eval_transform(photo_files, name):
    """Bit-exact where the JPEG is too small for a reduced decode (short side under twice the
    largest resize target of the run's backbones, 2 x 333 with both)."""
    crops = _our_crops(photo_files, BACKBONES)[name]
    for i, path in enumerate(photo_files):
        ours = crops[i].permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
        torch.testing.assert_close(ours, _timm_input(path, name), rtol=0, atol=0)


def test_fp32_embeddings_equal_timm_pipeline(loaded, photo_files):
    embedder = Embedder(loaded, "cpu", "fp32")
    embeddings, norms = embedder.embed(_our_crops(photo_files, BACKBONES))
    for backbone in loaded:
        name = backbone.spec.name
        batch = torch.stack([_timm_input(p, name) for p in photo_files])
        with torch.inference_mode():
            reference = backbone.model.float()(batch.contiguous()).numpy()
        np.testing.assert_allclose(norms[name], np.linalg.norm(reference, axis=1), rtol=1e-4)
        unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        np.testing.assert_allclose(embeddings[name], unit, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(embeddings[name], axis=1), 1.0, atol=1e-5)
        # different photos give different vectors, so the tolerance above is not vacuous
        assert np.abs(embeddings[name][0] - embeddings[name][1]).max() > 1e-3


def test_same_image_same_embedding(loaded, photo_files):
    embedder = Embedder(loaded, "cpu", "fp32")
    crops = _our_crops(photo_files, BACKBONES)
    first, _ = embedder.embed(crops)
    again, _ = embedder.embed(_our_crops(photo_files, BACKBONES))
    for name in BACKBONES:
        np.testing.assert_array_equal(first[name], again[name])
    alone, _ = embedder.embed({n: crops[n][:1] for n in BACKBONES})
    for name in BACKBONES:  # batch composition does not change an image's embedding
        np.testing.assert_allclose(alone[name][0], first[name][0], atol=1e-5)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU has no native bf16")
def test_bf16_stays_within_cosine_0999_of_fp32(loaded, photo_files):
    crops = _our_crops(photo_files, BACKBONES)
    fp32, _ = Embedder(loaded, "cpu", "fp32").embed(crops)
    bf16, _ = Embedder(loaded, "cpu", "bf16").embed(crops)
    for name in BACKBONES:
        cosine = (fp32[name] * bf16[name]).sum(axis=1)
        assert cosine.min() >= 0.999, (name, cosine)


@pytest.fixture(scope="module")
def phone_photos(tmp_path_factory):
    """12 MP JPEGs (4032x3024, a phone's frame; one portrait), real photos upscaled, and the
    worst cases: reduced to exactly xception's 333-pixel short side (1/8 and 1/2)."""
    folder = tmp_path_factory.mktemp("phone")
    paths = []
    for name, size in (
        ("chelsea.png", (4032, 3024)),
        ("coffee.png", (3024, 4032)),
        ("astronaut.png", (3552, 2664)),
        ("motorcycle_left.png", (888, 666)),
    ):
        path = folder / f"{name.split('.')[0]}.jpg"
        path.write_bytes(jpeg_bytes(photo(name).resize(size, Image.BICUBIC), 92))
        paths.append(path)
    return paths


def test_12mp_jpegs_decoded_at_reduced_scale_stay_within_cosine_0999_of_timm(loaded, phone_photos):
    """Draft decoding and the box resize against timm's eval transform on the full-size
    decode: close, not equal (so the comparison is not vacuous)."""
    embedder = Embedder(loaded, "cpu", "fp32")
    ours = _our_crops(phone_photos, BACKBONES)
    embeddings, _ = embedder.embed(ours)
    for backbone in loaded:
        name = backbone.spec.name
        batch = torch.stack([_timm_input(p, name) for p in phone_photos])
        reference_pixels = batch.mul(0.5).add(0.5).mul(255).round().permute(0, 2, 3, 1)
        levels = (ours[name].float() - reference_pixels).abs().mean()
        assert 0 < levels < 2, (name, levels)  # of 255 (0.5 to 1.4 measured)
        with torch.inference_mode():
            reference = backbone.model.float()(batch.contiguous()).numpy()
        unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        cosine = (embeddings[name] * unit).sum(axis=1)
        print(f"{name}: cosine to timm on the full decode {np.round(cosine, 5).tolist()}")
        assert cosine.min() >= 0.999, (name, cosine)
