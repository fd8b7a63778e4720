"""Where a backbone's weights come from, loading them, and the `weights_id` that names them.

`--weights` takes one of:
- `imagenet`: timm's pretrained weights through its normal cache (works offline when cached);
- `random`: seeded random init, for tests and smoke runs;
- `DIR`: a folder holding `<backbone>.safetensors` or `<backbone>.pth`;
- `NAME=PATH[,NAME=PATH]`: one file per backbone.

A file may be a bare state dict or a full timm checkpoint: classifier keys are dropped, any other
mismatch is an error that names the keys. Nothing ever falls back silently: a missing file or
unavailable ImageNet weights is a `WeightsError` with a one-line, actionable message.

`weights_id` = `<origin>:<sha256 of the tensors, 16 hex>`, so two embeddings are comparable exactly
when their weights_id matches, whatever the file was called.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .backbones import BackboneSpec, build_model

if TYPE_CHECKING:
    import torch

__all__ = [
    "RANDOM_SEED",
    "LoadedBackbone",
    "WeightsError",
    "WeightsSource",
    "fingerprint",
    "load_backbone",
    "parse_weights_spec",
]

RANDOM_SEED = 0
_SUFFIXES = (".safetensors", ".pth", ".pt")


class WeightsError(RuntimeError):
    """Weights that cannot be had or do not fit; the message says what to do."""


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "imagenet" | "random" | "file"
    path: Path | None = None


@dataclass
class LoadedBackbone:
    spec: BackboneSpec
    model: torch.nn.Module
    weights_id: str
    source: WeightsSource


def parse_weights_spec(spec: str, backbones: list[str]) -> dict[str, WeightsSource]:
    """Map each requested backbone name to its weights source; raise WeightsError when unclear."""
    spec = spec.strip()
    if spec in ("imagenet", "random"):
        return {name: WeightsSource(spec) for name in backbones}
    if "=" in spec:
        given: dict[str, Path] = {}
        for item in spec.split(","):
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise WeightsError(f"--weights: expected NAME=PATH, got {item!r}")
            given[name.strip()] = Path(path.strip()).expanduser()
        unknown = sorted(set(given) - set(backbones))
        if unknown:
            raise WeightsError(
                f"--weights names {', '.join(unknown)}, which this run does not use "
                f"(backbones: {', '.join(backbones)})"
            )
        missing = [name for name in backbones if name not in given]
        if missing:
            raise WeightsError(f"--weights gives no file for {', '.join(missing)}")
        for name, path in given.items():
            if not path.is_file():
                raise WeightsError(f"--weights: weights file for {name} not found: {path}")
        return {name: WeightsSource("file", given[name]) for name in backbones}
    folder = Path(spec).expanduser()
    if folder.is_file():
        raise WeightsError(
            f"--weights {spec}: a single file needs a backbone, e.g. xception={spec}"
        )
    if not folder.is_dir():
        raise WeightsError(
            f"--weights {spec!r}: not 'imagenet', 'random', a folder or NAME=PATH pairs"
        )
    sources = {}
    for name in backbones:
        candidates = [folder / f"{name}{suffix}" for suffix in _SUFFIXES]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise WeightsError(
                f"--weights {folder}: no {name}.safetensors or {name}.pth in that folder"
            )
        sources[name] = WeightsSource("file", found)
    return sources


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of every tensor, in name order (16 hex)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def load_backbone(spec: BackboneSpec, source: WeightsSource) -> LoadedBackbone:
    """Build the model for `spec` (classifier removed, eval mode) and load its weights."""
    import torch

    if source.kind == "random":
        torch.manual_seed(RANDOM_SEED)
        model = build_model(spec)
        origin = f"random-seed{RANDOM_SEED}"
    elif source.kind == "imagenet":
        model = _load_imagenet(spec)
        origin = spec.pretrained_name
    else:
        model = build_model(spec)
        _load_file_into(model, spec, source.path)
        origin = f"file-{source.path.name}"
    weights_id = f"{origin}:{fingerprint(model.state_dict())}"
    return LoadedBackbone(spec=spec, model=model, weights_id=weights_id, source=source)


def _load_imagenet(spec: BackboneSpec) -> torch.nn.Module:
    import timm

    if not spec.has_pretrained:
        raise WeightsError(
            f"no ImageNet weights for {spec.name} (timm publishes alpha 1.0 only): "
            f"pass --weights {spec.name}=PATH or --weights random"
        )
    try:
        model = timm.create_model(spec.pretrained_name, pretrained=True, num_classes=0)
    except Exception as exc:  # timm raises OSError, HF hub or urllib errors when offline
        reason = type(exc).__name__
        if str(exc):
            reason += ": " + textwrap.shorten(str(exc).splitlines()[0], 100, placeholder="...")
        raise WeightsError(
            f"ImageNet weights for {spec.name} ({spec.pretrained_name}) are not in the local "
            f"cache (~/.cache/huggingface or ~/.cache/torch/hub) and could not be downloaded "
            f"({reason}); fetch them once where there is network, pass --weights DIR holding "
            f"{spec.name}.safetensors, or use --weights random"
        ) from exc
    return model.eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or .pth; unwraps {'state_dict': ...} / {'model': ...}."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_file_into(model: torch.nn.Module, spec: BackboneSpec, path: Path) -> None:
    state = read_state_dict(path)
    classifier = model.pretrained_cfg.get("classifier", "")
    state = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsError(f"{path} does not fit {spec.name} ({spec.arch}): " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
