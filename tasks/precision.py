"""`--precision auto`: the fastest precision whose embeddings stay within cosine 0.999 of fp32.

Measured, not assumed: each candidate the device offers (CPU: bf16 where the CPU computes it
natively, fp32; CUDA: fp16, bf16 where supported, fp32) embeds the same probe batch with the run's
backbones and weights; the fastest candidate whose every embedding is within cosine `TOLERANCE`
of fp32's wins. The measurement takes a few seconds, so it is cached per device, torch version,
backbones and weights (a JSON file in embedlake's cache folder), and a later candidate must be
more than 10 % faster than an earlier one to win, so timing noise does not flip the choice.

This is the "measured" step of the engine plan (tasks.engine), which alone decides a run's
precision: a precision asked for, or the one the lake holds, comes first.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .embed import Embedder, cpu_has_native_bf16

if TYPE_CHECKING:
    from .weights import LoadedBackbone

__all__ = [
    "TOLERANCE",
    "PrecisionChoice",
    "cached_measurement",
    "candidates",
    "choose_precision",
    "hardware_name",
]

TOLERANCE = 0.999
TIE_MARGIN = 0.10  # a later candidate must be >10 % faster to win over an earlier one


@dataclass
class PrecisionChoice:
    precision: str
    seconds_per_image: dict[str, float]  # per candidate
    min_cosine: dict[str, float]  # per candidate, the worst embedding against fp32's
    measured: bool = True  # False: read from the cache

    def describe(self) -> str:
        rows = ", ".join(
            f"{p} {self.seconds_per_image[p] * 1e3:.1f} ms/image cos>={self.min_cosine[p]:.5f}"
            for p in self.seconds_per_image
        )
        origin = "measured" if self.measured else "measured earlier (cached)"
        return f"precision auto -> {self.precision} ({origin}: {rows})"


def candidates(device: str) -> list[str]:
    """The precisions worth trying on `device`, fp32 (the reference) last."""
    if device.startswith("cuda"):
        import torch

        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ["fp16", *(["bf16"] if bf16 else []), "fp32"]
    return [*(["bf16"] if cpu_has_native_bf16() else []), "fp32"]


def choose_precision(
    backbones: list[LoadedBackbone], device: str, cache_file: Path | None = None
) -> PrecisionChoice:
    key = _cache_key(backbones, device)
    cached = _read_cache(cache_file)
    if key in cached:
        try:
            return PrecisionChoice(**cached[key], measured=False)
        except TypeError as exc:
            raise RuntimeError(f"{cache_file}: unreadable precision cache; delete it") from exc
    choice = _measure(backbones, device, candidates(device))
    if cache_file is not None:
        record = asdict(choice)
        record.pop("measured")
        with _locked(cache_file):  # read, merge and replace: concurrent runs keep both entries
            _write_cache(cache_file, {**_read_cache(cache_file), key: record})
    return choice


def _measure(
    backbones: list[LoadedBackbone], device: str, options: list[str], tolerance: float = TOLERANCE
) -> PrecisionChoice:
    probe = _probe_batch(backbones, 64 if device.startswith("cuda") else 8)
    seconds, outputs = {}, {}
    for precision in options:
        embedder = Embedder(backbones, device, precision)
        embedder.embed(probe)  # warm-up: kernels chosen, memory allocated
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            outputs[precision], _ = embedder.embed(probe)
            best = min(best, time.perf_counter() - started)
        seconds[precision] = best / len(next(iter(probe.values())))
    reference = outputs["fp32"]
    cosine = {p: min_cosine(outputs[p], reference) for p in options}
    passing = [p for p in options if cosine[p] >= tolerance]
    # near-ties go to the earlier candidate, so timing noise does not flip the choice
    fastest = min(seconds[p] for p in passing)
    chosen = next(p for p in passing if seconds[p] <= fastest * (1 + TIE_MARGIN))
    return PrecisionChoice(chosen, seconds, cosine)


def _probe_batch(backbones: list[LoadedBackbone], n: int) -> dict:
    """Smooth, seeded pseudo-photos (uint8 NHWC) at each backbone's input size."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((n, 3, 12, 12), generator=generator)
    batch = {}
    for loaded in backbones:
        size = loaded.spec.input_size
        x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        batch[loaded.spec.name] = pixels.permute(0, 2, 3, 1).contiguous()
    return batch


def _cache_key(backbones: list[LoadedBackbone], device: str) -> str:
    weights = ",".join(sorted(f"{b.spec.name}={b.weights_id}" for b in backbones))
    return f"{hardware_name(device)}|{weights}"


def hardware_name(device: str) -> str:
    """What a measurement on `device` depends on: the GPU's or CPU's model, and torch's version."""
    import torch

    if device.startswith("cuda"):
        hardware = torch.cuda.get_device_name(torch.device(device))
    else:
        hardware = _cpu_model()
    return f"{hardware}|torch {torch.__version__}"


def cached_measurement(cache_file: Path, key: str, measure: Callable[[], Any]) -> Any:
    """`measure()`'s JSON-able result, measured once per `key` and kept in `cache_file`."""
    with _locked(cache_file):
        data = _read_cache(cache_file)
        if key not in data:
            data[key] = measure()
            _write_cache(cache_file, data)
    return data[key]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    except OSError:
        pass
    return f"cpu x{os.cpu_count()}"


def _read_cache(cache_file: Path | None) -> dict:
    if cache_file is None or not cache_file.exists():
        return {}
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{cache_file}: unreadable cache ({exc}); delete it") from exc
    if not isinstance(data, dict):
        raise RuntimeError(f"{cache_file}: unreadable cache (not an object); delete it")
    return data


@contextlib.contextmanager
def _locked(cache_file: Path) -> Iterator[None]:
    import fcntl

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_file.with_name(f".{cache_file.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write_cache(cache_file: Path, data: dict) -> None:
    temporary = cache_file.with_name(f".{cache_file.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(temporary, cache_file)


def min_cosine(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The worst cosine between two sets of unit embeddings, over backbones and rows; -1 when
    any embedding is not finite (an overflow must fail the tolerance, not slip past `min`)."""
    cosines = np.concatenate([(a[name] * b[name]).sum(axis=1) for name in a])
    return float(cosines.min()) if np.isfinite(cosines).all() else -1.0
