"""Choosing torch.compile: only where the run is large enough to repay the compile time."""

import pytest
from pydantic import ValidationError

from embedlake.tasks.engine import _compile
from embedlake.tasks.params import COMPILE_AUTO_MIN_IMAGES, RunParams, explain

pytestmark = pytest.mark.unit


def test_auto_compiles_only_large_cuda_runs():
    assert _compile("auto", "cuda", COMPILE_AUTO_MIN_IMAGES)
    assert not _compile("auto", "cuda", COMPILE_AUTO_MIN_IMAGES - 1)
    assert not _compile("auto", "cpu", 10 * COMPILE_AUTO_MIN_IMAGES)


def test_on_and_off_are_obeyed_and_anything_else_refused():
    assert _compile("on", "cpu", 1)
    assert not _compile("off", "cuda:0", 10**9)
    with pytest.raises(ValidationError) as refused:  # RunParams holds the allowed values
        RunParams(source=".", compile="yes")
    assert explain(refused.value).startswith("--compile 'yes'")


def test_a_short_batch_padded_to_the_compiled_shape_gives_the_same_rows():
    import numpy as np
    import torch

    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.embed import Embedder
    from embedlake.tasks.weights import load_backbone, parse_weights_spec

    names = ["mobilenet_v1"]
    sources = parse_weights_spec("random", names)
    loaded = [load_backbone(resolve_backbone(n), sources[n]) for n in names]
    crops = {"mobilenet_v1": torch.randint(0, 256, (4, 224, 224, 3), dtype=torch.uint8)}
    plain = Embedder(loaded, "cpu", "fp32")
    padded = Embedder(loaded, "cpu", "fp32")
    padded.compiled = True  # the padding path, without paying for a compile on 2 CPU cores
    padded.embed(crops)  # fixes the shape at 4
    short = {"mobilenet_v1": crops["mobilenet_v1"][:3]}
    expected, expected_norms = plain.embed(short)
    got, norms = padded.embed(short)
    assert got["mobilenet_v1"].shape == (3, 1024)
    np.testing.assert_allclose(got["mobilenet_v1"], expected["mobilenet_v1"], atol=1e-5)
    np.testing.assert_allclose(norms["mobilenet_v1"], expected_norms["mobilenet_v1"], rtol=1e-5)
