"""Embed: uint8 crops in, L2-normalised embeddings (and their raw norms) out, in batches.

Decoding runs in DataLoader worker processes, overlapped with the forward passes. Batches travel
as uint8 NHWC and are normalised on the device with timm's arithmetic (x/255 - mean) / std, then
laid out channels_last. Forward passes run under `torch.inference_mode()` at the run's precision:
fp32, or bf16/fp16 autocast. Every input item yields a result: an embedding per backbone, or the
decode error that stopped it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .decode import CropPlan, DecodeError, decode_for_backbones

if TYPE_CHECKING:
    import torch

    from .weights import LoadedBackbone

__all__ = [
    "PRECISIONS",
    "BatchResult",
    "EmbedItem",
    "Embedder",
    "cpu_has_native_bf16",
    "iter_embedded_batches",
    "resolve_device",
    "resolve_precision",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class EmbedItem:
    image_id: str
    path: Path


@dataclass
class BatchResult:
    """One batch's outcome: embeddings per backbone for `ok_ids`, and the items that failed."""

    ok_ids: list[str]
    embeddings: dict[str, np.ndarray]  # backbone -> (n, dim) float32, L2-normalised
    norms: dict[str, np.ndarray]  # backbone -> (n,) float32
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (image_id, code, message)


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: no CUDA device is available")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise ValueError(f"--device {requested!r}: expected auto, cpu or cuda[:N]")
    return requested


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU computes bf16 natively, so autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(requested: str, device: str) -> str:
    """`auto`: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."""
    if requested not in PRECISIONS:
        raise ValueError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        if requested == "fp16" and not device.startswith("cuda"):
            raise ValueError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        return requested
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


class Embedder:
    """The loaded backbones on one device at one precision."""

    def __init__(self, backbones: list[LoadedBackbone], device: str, precision: str):
        import torch

        self.device = torch.device(device)
        self.precision = precision
        self.backbones = backbones
        self._norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for loaded in backbones:
            loaded.model.to(self.device).eval()
            loaded.model.to(memory_format=torch.channels_last)
            cfg = loaded.spec.data_config()
            shape = (1, 3, 1, 1)
            mean = torch.tensor(cfg["mean"], device=self.device).view(shape)
            std = torch.tensor(cfg["std"], device=self.device).view(shape)
            self._norm[loaded.spec.name] = (mean, std)

    def _autocast(self):
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def embed(
        self, crops: dict[str, torch.Tensor]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """uint8 NHWC batches per backbone -> (unit embeddings, raw norms) as float32 arrays."""
        import torch

        embeddings, norms = {}, {}
        with torch.inference_mode():
            for loaded in self.backbones:
                name = loaded.spec.name
                batch = crops[name].to(self.device, non_blocking=True)
                mean, std = self._norm[name]
                # the same ops, in the same order, as ToTensor + Normalize: bitwise parity in fp32
                x = batch.permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
                x = x.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    features = loaded.model(x)
                features = features.float()
                norm = features.norm(dim=1)
                unit = features / norm.clamp_min(1e-12).unsqueeze(1)
                embeddings[name] = unit.cpu().numpy()
                norms[name] = norm.cpu().numpy()
        return embeddings, norms


class _CropDataset:
    """Map-style dataset for DataLoader workers: item -> crops or a decode error."""

    def __init__(self, items: list[EmbedItem], plans: list[CropPlan], max_pixels: int):
        self.items = items
        self.plans = plans
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, dict[str, np.ndarray] | None, Any]:
        item = self.items[index]
        try:
            return item.image_id, decode_for_backbones(item.path, self.plans, self.max_pixels), None
        except DecodeError as exc:
            return item.image_id, None, (exc.code, exc.message)


def _collate(samples: list[tuple[str, dict[str, np.ndarray] | None, Any]]) -> dict[str, Any]:
    import torch

    ok = [(image_id, crops) for image_id, crops, _ in samples if crops is not None]
    errors = [(image_id, err[0], err[1]) for image_id, crops, err in samples if crops is None]
    stacked: dict[str, torch.Tensor] = {}
    if ok:
        for name in ok[0][1]:
            stacked[name] = torch.from_numpy(np.stack([crops[name] for _, crops in ok]))
    return {"ok_ids": [image_id for image_id, _ in ok], "crops": stacked, "errors": errors}


def iter_embedded_batches(
    items: list[EmbedItem],
    embedder: Embedder,
    plans: list[CropPlan],
    *,
    batch_size: int,
    workers: int,
    max_pixels: int,
) -> Iterator[BatchResult]:
    """Decode (in `workers` processes; 0 = in this process) and embed `items`, batch by batch."""
    from torch.utils.data import DataLoader

    if not items:
        return
    loader = DataLoader(
        _CropDataset(items, plans, max_pixels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=embedder.device.type == "cuda",
        # forkserver: workers must not inherit Prefect's threads and locks by fork()
        multiprocessing_context="forkserver" if workers > 0 else None,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    for batch in loader:
        if batch["ok_ids"]:
            embeddings, norms = embedder.embed(batch["crops"])
        else:
            embeddings, norms = {}, {}
        yield BatchResult(batch["ok_ids"], embeddings, norms, batch["errors"])
