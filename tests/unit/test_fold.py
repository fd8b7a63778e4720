"""Conv-BN folding keeps each backbone's output while removing every BatchNorm."""

from __future__ import annotations

import copy

import pytest
import torch

from embedlake.tasks.backbones import build_model, resolve_backbone
from embedlake.tasks.fold import fold_batchnorm

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("name", "pairs"), [("mobilenet_v1", 27), ("xception", 40)])
def test_folding_keeps_the_output(name, pairs):
    torch.manual_seed(0)
    model = build_model(resolve_backbone(name))
    for module in model.modules():  # BN statistics far from identity, so folding matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == pairs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    size = resolve_backbone(name).input_size
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
