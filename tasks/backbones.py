"""The backbone registry: MobileNet v1 (Howard et al. 2017) and Xception (Chollet 2017).

Both networks come from timm; nothing here re-implements a layer. An entry knows its timm
architecture, the pretrained tag whose eval preprocessing it uses, its input size and its
embedding width (the global-average-pooled features, classifier removed).

Names follow TF-slim's checkpoint naming:
- `mobilenet_v1` is `mobilenet_v1_1.0_224`; `mobilenet_v1_<alpha>_<resolution>` takes the width
  multiplier alpha in {1.0, 0.75, 0.5, 0.25} and the input resolution in {224, 192, 160, 128}
  (the paper's Tables 6 and 7).
- `xception` is Chollet's exact network at 299 px (timm's `legacy_xception`, Keras weights), not
  DeepLab's aligned Xception (`xception41/65/71`).

Eval preprocessing is the pretrained config's own (timm `resolve_data_config`): bicubic resize of
the short side to input/crop_pct, centre crop, mean = std = 0.5 for both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "ALPHAS",
    "DEFAULT_BACKBONES",
    "RESOLUTIONS",
    "BackboneSpec",
    "UnknownBackbone",
    "all_backbone_names",
    "build_model",
    "count_macs",
    "describe",
    "resolve_backbone",
]

ALPHAS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)
DEFAULT_BACKBONES = ("mobilenet_v1", "xception")

_MOBILENET_NAME = re.compile(r"^mobilenet_v1(?:_(?P<alpha>[0-9.]+)_(?P<res>[0-9]+))?$")


class UnknownBackbone(ValueError):
    """A backbone name that is not in the registry."""


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: what to build, how to feed it and what comes out."""

    name: str
    family: str
    arch: str
    pretrained_tag: str
    input_size: int
    embedding_dim: int
    alpha: float = 1.0

    @property
    def pretrained_name(self) -> str:
        return f"{self.arch}.{self.pretrained_tag}"

    @property
    def has_pretrained(self) -> bool:
        # timm publishes ImageNet weights for alpha 1.0 only; the network is resolution-agnostic,
        # so the same weights serve every input size, as TF-slim's per-resolution models show.
        return self.alpha == 1.0

    def data_config(self) -> dict[str, Any]:
        """The eval data config of the pretrained tag, at this entry's input size."""
        import timm.data

        cfg = timm.data.resolve_data_config(
            pretrained_cfg=_pretrained_cfg(self.pretrained_name), use_test_size=False
        )
        cfg["input_size"] = (3, self.input_size, self.input_size)
        return cfg


def _pretrained_cfg(name: str) -> dict[str, Any]:
    import timm.models

    return timm.models.get_pretrained_cfg(name).to_dict()


def _mobilenet(alpha: float, resolution: int) -> BackboneSpec:
    name = (
        "mobilenet_v1"
        if (alpha, resolution) == (1.0, 224)
        else f"mobilenet_v1_{alpha}_{resolution}"
    )
    return BackboneSpec(
        name=name,
        family="mobilenet_v1",
        arch="mobilenetv1_100",
        pretrained_tag="ra4_e3600_r224_in1k",
        input_size=resolution,
        embedding_dim=int(1024 * alpha),
        alpha=alpha,
    )


_XCEPTION = BackboneSpec(
    name="xception",
    family="xception",
    arch="legacy_xception",
    pretrained_tag="tf_in1k",
    input_size=299,
    embedding_dim=2048,
)


def resolve_backbone(name: str) -> BackboneSpec:
    """The registry entry for a TF-slim style name (`mobilenet_v1_0.5_160`, `xception`)."""
    if name in ("xception", "xception_299"):
        return _XCEPTION
    match = _MOBILENET_NAME.match(name)
    if match:
        if match["alpha"] is None:
            return _mobilenet(1.0, 224)
        try:
            alpha, res = float(match["alpha"]), int(match["res"])
        except ValueError:
            alpha, res = -1.0, -1
        if alpha in ALPHAS and res in RESOLUTIONS:
            return _mobilenet(alpha, res)
    raise UnknownBackbone(
        f"unknown backbone {name!r}: use xception or mobilenet_v1[_ALPHA_RES] with ALPHA in "
        f"{', '.join(map(str, ALPHAS))} and RES in {', '.join(map(str, RESOLUTIONS))}"
    )


def all_backbone_names() -> list[str]:
    names = [_mobilenet(a, r).name for a in ALPHAS for r in RESOLUTIONS]
    return [*names, _XCEPTION.name]


def build_model(spec: BackboneSpec, *, num_classes: int = 0) -> torch.nn.Module:
    """A randomly initialised timm model for `spec`, in eval mode; num_classes=0 drops the head."""
    import timm

    if spec.family == "xception" or spec.alpha == 1.0:
        model = timm.create_model(spec.arch, pretrained=False, num_classes=num_classes)
    else:
        # timm registers MobileNet v1 at alpha 1.0 only; its generator takes the multiplier
        # (channel counts stay multiples of 8, which TF-slim's alphas already are).
        from timm.models.efficientnet import _gen_mobilenet_v1

        model = _gen_mobilenet_v1(spec.arch, spec.alpha, pretrained=False, num_classes=num_classes)
    return model.eval()


def count_macs(model: torch.nn.Module, input_size: int) -> int:
    """Multiply-adds of one forward pass on one image (torch's FLOP counter / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() // 2


def describe(spec: BackboneSpec) -> dict[str, Any]:
    """The figures `embedlake backbones` prints; params and MACs are counted on the real model."""
    model = build_model(spec, num_classes=0)
    with_head = build_model(spec, num_classes=1000)
    cfg = spec.data_config()
    return {
        "name": spec.name,
        "timm_arch": spec.arch,
        "params": sum(p.numel() for p in model.parameters()),
        "params_with_classifier": sum(p.numel() for p in with_head.parameters()),
        "macs": count_macs(model, spec.input_size),
        "macs_with_classifier": count_macs(with_head, spec.input_size),
        "embedding_dim": spec.embedding_dim,
        "input_size": spec.input_size,
        "preprocessing": {
            "interpolation": cfg["interpolation"],
            "crop_pct": cfg["crop_pct"],
            "crop_mode": cfg["crop_mode"],
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
        },
        "pretrained_tag": spec.pretrained_name,
        "imagenet_weights": spec.has_pretrained,
    }
