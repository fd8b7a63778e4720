"""Weights: full timm checkpoints load from a folder and from NAME=PATH; misfits are refused."""

from __future__ import annotations

import pytest
import torch

from embedlake.tasks.backbones import build_model, resolve_backbone
from embedlake.tasks.weights import WeightsError, load_backbone, parse_weights_spec

pytestmark = pytest.mark.unit

NAME = "mobilenet_v1_0.25_128"  # small and fast; the code path is the same for every entry


@pytest.fixture
def full_checkpoint(tmp_path):
    """A full timm checkpoint, classifier included, as a trainer would save it."""
    torch.manual_seed(123)
    model = build_model(resolve_backbone(NAME), num_classes=1000)
    path = tmp_path / "ckpt" / f"{NAME}.pth"
    path.parent.mkdir()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    return path, model


def _features(model, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def test_full_checkpoint_loads_from_folder_and_from_name_path(full_checkpoint, tmp_path):
    path, trained = full_checkpoint
    spec = resolve_backbone(NAME)
    from_dir = load_backbone(spec, parse_weights_spec(str(path.parent), [NAME])[NAME])
    from_pair = load_backbone(spec, parse_weights_spec(f"{NAME}={path}", [NAME])[NAME])
    assert from_dir.weights_id == from_pair.weights_id
    assert from_dir.weights_id.startswith(f"file-{NAME}.pth:")
    torch.testing.assert_close(_features(from_dir.model), _features(trained.eval()))

    from safetensors.torch import save_file

    st = tmp_path / f"{NAME}.safetensors"
    save_file(build_model(spec).state_dict() | {}, st)  # a headless state dict loads too
    loaded = load_backbone(spec, parse_weights_spec(f"{NAME}={st}", [NAME])[NAME])
    assert loaded.weights_id.split(":")[1] != from_dir.weights_id.split(":")[1]


def test_fingerprint_follows_the_tensors_not_the_file(full_checkpoint, tmp_path):
    path, _ = full_checkpoint
    copy = tmp_path / "elsewhere.pth"
    copy.write_bytes(path.read_bytes())
    spec = resolve_backbone(NAME)
    a = load_backbone(spec, parse_weights_spec(f"{NAME}={path}", [NAME])[NAME])
    b = load_backbone(spec, parse_weights_spec(f"{NAME}={copy}", [NAME])[NAME])
    assert a.weights_id.split(":")[1] == b.weights_id.split(":")[1]


def test_mismatched_checkpoint_is_refused_naming_the_keys(tmp_path):
    other = build_model(resolve_backbone("mobilenet_v1_0.5_128"))
    path = tmp_path / "wrong.pth"
    torch.save(other.state_dict(), path)
    source = parse_weights_spec(f"{NAME}={path}", [NAME])[NAME]
    with pytest.raises(
        WeightsError, match=r"does not fit mobilenet_v1_0.25_128.*shape: blocks\.0\.0\.bn1\.bias"
    ):
        load_backbone(resolve_backbone(NAME), source)


def test_missing_keys_are_named(tmp_path):
    state = build_model(resolve_backbone(NAME)).state_dict()
    state.pop("conv_stem.weight")
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="missing: conv_stem.weight"):
        load_backbone(resolve_backbone(NAME), parse_weights_spec(f"{NAME}={path}", [NAME])[NAME])


def test_random_is_seeded_and_reproducible():
    spec = resolve_backbone(NAME)
    a = load_backbone(spec, parse_weights_spec("random", [NAME])[NAME])
    b = load_backbone(spec, parse_weights_spec("random", [NAME])[NAME])
    assert a.weights_id == b.weights_id and a.weights_id.startswith("random-seed0:")


def test_imagenet_offline_fails_loudly_with_what_to_do():
    spec = resolve_backbone("xception")
    with pytest.raises(WeightsError) as info:
        load_backbone(spec, parse_weights_spec("imagenet", ["xception"])["xception"])
    message = str(info.value)
    assert "--weights random" in message and "legacy_xception.tf_in1k" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("nowhere/at/all", "not 'imagenet', 'random', a folder or NAME=PATH"),
        ("mobilenet_v1=/a.pth,xception=/no/such.pth", "weights file for mobilenet_v1 not found"),
        ("mobilenet_v1=/x.pth", "gives no file for xception"),
        ("resnet50=/x.pth,xception=/y.pth", "which this run does not use"),
    ],
)
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(WeightsError, match=match):
        parse_weights_spec(spec, ["mobilenet_v1", "xception"])


def test_no_imagenet_weights_for_narrow_mobilenets():
    spec = resolve_backbone("mobilenet_v1_0.5_160")
    with pytest.raises(WeightsError, match="no ImageNet weights for mobilenet_v1_0.5_160"):
        load_backbone(spec, parse_weights_spec("imagenet", [spec.name])[spec.name])
