"""The registry against the papers: MobileNet v1 Tables 6-7, Xception's parameter count."""

from __future__ import annotations

import pytest

from embedlake.tasks.backbones import (
    ALPHAS,
    RESOLUTIONS,
    UnknownBackbone,
    all_backbone_names,
    describe,
    resolve_backbone,
)

pytestmark = pytest.mark.unit

# Howard et al. 2017, Table 6 (width multiplier at 224) and Table 7 (resolution at alpha 1.0):
# millions of mult-adds and of parameters, classifier included, as the paper counts them.
MOBILENET_TABLE_6 = {1.0: (569, 4.2), 0.75: (325, 2.6), 0.5: (149, 1.3), 0.25: (41, 0.5)}
MOBILENET_TABLE_7 = {224: 569, 192: 418, 160: 290, 128: 186}
XCEPTION_PARAMS_WITH_CLASSIFIER = 22_855_952


@pytest.mark.parametrize("alpha", ALPHAS)
def test_mobilenet_width_multiplier_matches_table_6(alpha):
    figures = describe(resolve_backbone(f"mobilenet_v1_{alpha}_224"))
    macs_m, params_m = MOBILENET_TABLE_6[alpha]
    assert abs(figures["macs_with_classifier"] / 1e6 - macs_m) < 1
    assert round(figures["params_with_classifier"] / 1e6, 1) == params_m
    assert figures["embedding_dim"] == int(1024 * alpha)
    # as run: no classifier, so 1024*alpha*1000 + 1000 fewer parameters
    assert figures["params_with_classifier"] - figures["params"] == int(1024 * alpha) * 1000 + 1000


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_mobilenet_resolution_matches_table_7(resolution):
    figures = describe(resolve_backbone(f"mobilenet_v1_1.0_{resolution}"))
    # the paper truncates (290.7 M is printed as 290)
    assert abs(figures["macs_with_classifier"] / 1e6 - MOBILENET_TABLE_7[resolution]) < 1
    assert round(figures["params_with_classifier"] / 1e6, 1) == 4.2
    assert figures["input_size"] == resolution


def test_xception_is_chollets_network():
    figures = describe(resolve_backbone("xception"))
    assert figures["timm_arch"] == "legacy_xception"
    assert figures["params_with_classifier"] == XCEPTION_PARAMS_WITH_CLASSIFIER
    assert figures["params"] == XCEPTION_PARAMS_WITH_CLASSIFIER - (2048 * 1000 + 1000)
    assert figures["embedding_dim"] == 2048
    assert figures["input_size"] == 299
    assert 8.3e9 < figures["macs"] < 8.5e9  # ~8.4 G multiply-adds at 299 px
    pre = figures["preprocessing"]
    assert (pre["interpolation"], pre["crop_pct"], pre["mean"]) == ("bicubic", 0.8975, [0.5] * 3)


def test_default_mobilenet_preprocessing():
    figures = describe(resolve_backbone("mobilenet_v1"))
    assert figures["name"] == "mobilenet_v1"
    assert figures["pretrained_tag"] == "mobilenetv1_100.ra4_e3600_r224_in1k"
    pre = figures["preprocessing"]
    assert (pre["interpolation"], pre["crop_pct"], pre["std"]) == ("bicubic", 0.875, [0.5] * 3)


@pytest.mark.parametrize("name", all_backbone_names())
def test_every_registered_name_resolves_to_itself(name):
    assert resolve_backbone(name).name == name


@pytest.mark.parametrize(
    "bad", ["mobilenet_v2", "mobilenet_v1_0.6_224", "mobilenet_v1_1.0_100", "xception65"]
)
def test_unknown_names_are_refused(bad):
    with pytest.raises(UnknownBackbone, match="unknown backbone"):
        resolve_backbone(bad)
