"""The CUDA path: runs where a GPU is present (the device machine), skips cleanly in CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.decode import crop_plans, decode_for_backbones
from embedlake.tasks.decode_pool import DecodeJob
from embedlake.tasks.discover import DEFAULT_MAX_PIXELS
from embedlake.tasks.embed import Embedder, iter_embedded_batches
from embedlake.tasks.engine import _default_precision
from embedlake.tasks.weights import load_backbone, parse_weights_spec
from tests.conftest import PHOTOS, jpeg_bytes, photo

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

NAMES = ["mobilenet_v1", "xception"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda")
    paths = []
    for i, name in enumerate(PHOTOS):
        path = folder / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(photo(name)))
        paths.append(path)
    sources = parse_weights_spec("random", NAMES)
    loaded = [load_backbone(resolve_backbone(n), sources[n]) for n in NAMES]
    plans = crop_plans({n: resolve_backbone(n).data_config() for n in NAMES})
    return paths, loaded, plans


def _embed(paths, embedder, plans, batch_size=4, **options):
    jobs = [DecodeJob(str(i), p, "JPEG") for i, p in enumerate(paths)]
    out = {n: {} for n in NAMES}
    for batch in iter_embedded_batches(
        jobs,
        embedder,
        plans,
        batch_size=batch_size,
        workers=1,
        max_pixels=DEFAULT_MAX_PIXELS,
        decode_timeout=30,
        **options,
    ):
        assert not batch.errors
        for name in NAMES:
            for i, image_id in enumerate(batch.ok_ids):
                out[name][image_id] = batch.embeddings[name][i]
    return {n: np.stack([out[n][str(i)] for i in range(len(paths))]) for n in NAMES}


def test_auto_precision_on_cuda_is_fp16():
    assert _default_precision("cuda") == "fp16"


def test_cuda_fp16_and_device_decode_stay_within_cosine_0999_of_cpu_fp32(setup):
    paths, loaded, plans = setup
    reference = _embed(paths, Embedder(loaded, "cpu", "fp32"), plans)
    fp32 = _embed(paths, Embedder(loaded, "cuda", "fp32"), plans)
    fp16 = _embed(paths, Embedder(loaded, "cuda", "fp16"), plans)
    nvjpeg = _embed(paths, Embedder(loaded, "cuda", "fp16"), plans, decode_on_device=True)
    for name in NAMES:
        for label, got in (("fp32", fp32), ("fp16", fp16), ("nvjpeg", nvjpeg)):
            cosine = (got[name] * reference[name]).sum(axis=1)
            assert cosine.min() >= 0.999, (name, label, cosine)


def test_out_of_memory_backs_off_to_smaller_batches(setup):
    paths, loaded, plans = setup
    embedder = Embedder(loaded, "cuda", "fp16")
    crops = [decode_for_backbones(p, plans, DEFAULT_MAX_PIXELS) for p in paths]
    batch = {n: torch.from_numpy(np.stack([c[n] for c in crops] * 40)) for n in NAMES}
    expected, _ = embedder.embed({n: t[:4] for n, t in batch.items()})
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info()
    # leave 512 MiB free: far less than a batch of 200 needs, whatever the GPU's size
    hog = torch.empty(free - 512 * 2**20, dtype=torch.uint8, device="cuda")
    try:
        embeddings, _ = embedder.embed(batch)
    finally:
        del hog
        torch.cuda.empty_cache()
    assert embedder.max_batch < len(batch["xception"])
    for name in NAMES:
        np.testing.assert_allclose(embeddings[name][:4], expected[name], atol=2e-3)


@pytest.mark.parametrize("decode_on_device", [False, True])
def test_batches_queued_one_ahead_keep_each_embedding_with_its_image(setup, decode_on_device):
    """Batch N+1 is queued before batch N's result is read: ids and rows must stay paired."""
    paths, loaded, plans = setup
    embedder = Embedder(loaded, "cuda", "fp16")
    whole = _embed(paths, embedder, plans, decode_on_device=decode_on_device)
    one_by_one = _embed(paths, embedder, plans, decode_on_device=decode_on_device, batch_size=1)
    for name in NAMES:
        cosine = (whole[name] * one_by_one[name]).sum(axis=1)
        assert cosine.min() >= 0.999, (name, cosine)


def test_compiled_models_with_a_padded_last_batch_stay_within_cosine_0999_of_cpu_fp32(setup):
    paths, loaded, plans = setup  # 5 photos in batches of 4: the last batch is padded
    reference = _embed(paths, Embedder(loaded, "cpu", "fp32"), plans)
    compiled = Embedder(loaded, "cuda", "fp16", compile=True)
    got = _embed(paths, compiled, plans, decode_on_device=True)
    for name in NAMES:
        cosine = (got[name] * reference[name]).sum(axis=1)
        assert cosine.min() >= 0.999, (name, cosine)
