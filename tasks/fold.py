"""Fold eval-mode BatchNorm into the convolution before it: one op fewer per layer, same maths.

Found by tracing the model with torch.fx (timm's BatchNormAct2d kept whole), so it works for any
timm network where a Conv2d feeds only a BatchNorm: MobileNet v1's conv/BN/ReLU6 triples and
Xception's separable convs, skips and stems. A BatchNormAct2d keeps its activation.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]


def _leaf_types() -> tuple[type, ...]:
    from timm.layers import BatchNormAct2d

    return (BatchNormAct2d,)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, _leaf_types()) or super().is_leaf_module(module, qualified_name)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every Conv2d -> BatchNorm2d pair of an eval-mode `model` in place; returns the count."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules[source.target], nn.Conv2d)
            and len(source.users) == 1
        ):
            pairs.append((source.target, node.target))
    bn_act = _leaf_types()
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = modules[conv_name], modules[bn_name]
            _replace(model, conv_name, fuse_conv_bn_eval(conv, bn))
            rest = nn.Sequential(bn.drop, bn.act) if isinstance(bn, bn_act) else nn.Identity()
            _replace(model, bn_name, rest)
    return len(pairs)
