"""The engine plan: how a process embeds, settled once and read by everything that embeds.

One `EnginePlan` says where the models run and how: device, precision (and why that one), JPEG
decoding, torch.compile, decode worker processes and batch size. A run resolves it once, from
its options, the device and the lake (`plan_run`), logs it in one line, and its steps (the
neighbour graph included), its Ray shards and its probes read it; `similar` resolves one per lake
group it queries (`plan_query`); `reindex` reads the device (`resolve_device`). Nothing else
chooses any of these.

`--precision`, in this order (the first that answers wins; `why` records which):
- asked: a precision named on the command line (fp16 needs CUDA; bf16 on a CPU without native
  bf16 is honoured, slowly, as asked);
- lake holds: under auto, the one precision the lake holds these weights' embeddings at, among
  those the device offers (`precision.candidates`), so a rerun from any machine finds them;
- measured: the fastest candidate within cosine 0.999 of fp32 on this machine
  (`precision.choose_precision`, cached per machine in embedlake's cache folder);
- default: where nothing can be measured here (a Ray cluster's GPU this process cannot reach):
  fp16 on CUDA, bf16 on a CPU with native bf16, else fp32.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .embed import PRECISIONS, cpu_has_native_bf16
from .params import COMPILE_AUTO_MIN_IMAGES, RunParams
from .precision import PrecisionChoice, candidates, choose_precision
from .run_context import log

if TYPE_CHECKING:
    from .lake import Lake
    from .weights import LoadedBackbone

__all__ = [
    "EnginePlan",
    "Why",
    "decode_workers",
    "plan_query",
    "plan_run",
    "resolve_device",
]

Why = Literal["asked", "lake holds", "measured", "default"]

# a query batch of `similar` (its decoding is one worker process, query by query)
QUERY_BATCH = 32


@dataclass(frozen=True)
class EnginePlan:
    """How the models embed; `local_device` is where this process computes (the graph, probes):
    the same device, but for a Ray driver whose shards run on the cluster's GPUs."""

    device: str
    precision: str
    why: Why
    decode: Literal["pillow", "device"]
    compile: bool
    workers: int  # decode worker processes
    batch_size: int
    local_device: str

    @property
    def decode_on_device(self) -> bool:
        return self.decode == "device"

    def line(self) -> str:
        """The plan as the run log prints it."""
        here = f" (here {self.local_device})" if self.local_device != self.device else ""
        return (
            f"engine: device={self.device}{here} precision={self.precision} ({self.why}) "
            f"decode={self.decode} compile={'on' if self.compile else 'off'} "
            f"workers={self.workers} batch={self.batch_size}"
        )

    def on_this_node(self, requested_workers: int) -> EnginePlan:
        """The plan for a Ray worker node: automatic decode workers count its own cores."""
        return dataclasses.replace(self, workers=decode_workers(requested_workers))


def resolve_device(requested: str) -> str:
    """`auto`: CUDA when this process has it, else the CPU; `cuda[:N]` must be available."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: no CUDA device is available")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise ValueError(f"--device {requested!r}: expected auto, cpu or cuda[:N]")
    return requested


def decode_workers(requested: int) -> int:
    """`--workers`; -1: half the cores, 1 to 8. At least one when automatic: only a worker
    process can be replaced when a decoder hangs."""
    if requested >= 0:
        return requested
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def plan_run(
    params: RunParams,
    backbones: Sequence[LoadedBackbone],
    lake: Lake,
    lacking: Callable[[str], int],
    cluster_gpus: float = 0.0,
) -> EnginePlan:
    """The run's plan. `lacking(precision)`: how many images lack an embedding at that
    precision (compile pays off only for many); `cluster_gpus`: the Ray cluster's GPUs when
    the shards run there (with `--device auto`, they then embed on CUDA)."""
    from . import lake as lakes

    local = resolve_device(params.device)
    device = "cuda" if params.device == "auto" and cluster_gpus > 0 else local
    weights_ids = {b.spec.name: b.weights_id for b in backbones}
    cache = lakes.cache_root() / "precision.json"
    precision, why = _precision(
        params.precision,
        device,
        held=lakes.stored_precisions(lake, weights_ids) if params.precision == "auto" else set(),
        measure=lambda: choose_precision(list(backbones), device, cache),
    )
    return EnginePlan(
        device=device,
        precision=precision,
        why=why,
        decode=_decode(params.decode, device),
        compile=_compile(params.compile, device, lacking(precision)),
        workers=decode_workers(params.workers),
        batch_size=params.batch_size or (256 if device.startswith("cuda") else 16),
        local_device=local,
    )


def plan_query(requested_device: str, held: str) -> tuple[EnginePlan, str | None]:
    """`similar`'s plan for a lake group held at `held`: that precision, but fp32 where this
    device cannot compute fp16 (with a note saying so); Pillow decoding in one worker."""
    device = resolve_device(requested_device)
    precision, why, note = held, "lake holds", None
    if held == "fp16" and not device.startswith("cuda"):
        precision, why = "fp32", "default"
        note = (
            f"the lake's embeddings are fp16, which {device} does not compute: the queries were "
            "embedded at fp32 (fp16 stays within cosine 0.999 of fp32)"
        )
    plan = EnginePlan(device, precision, why, "pillow", False, 1, QUERY_BATCH, device)
    return plan, note


def _precision(
    asked: str, device: str, held: set[str], measure: Callable[[], PrecisionChoice]
) -> tuple[str, Why]:
    """Asked, else the one the lake holds that the device offers, else measured, else the
    default (see the module's docstring)."""
    import torch

    if asked not in PRECISIONS:
        raise ValueError(f"--precision {asked!r}: expected one of {', '.join(PRECISIONS)}")
    if asked != "auto":
        if asked == "fp16" and not device.startswith("cuda"):
            raise ValueError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        return asked, "asked"
    usable = held & set(candidates(device))
    if len(usable) == 1:
        (kept,) = usable
        log().info("precision auto -> %s: the lake holds these weights' embeddings at it", kept)
        return kept, "lake holds"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return _default_precision(device), "default"
    choice = measure()
    log().info(choice.describe())
    return choice.precision, "measured"


def _default_precision(device: str) -> str:
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def _decode(requested: str, device: str) -> Literal["pillow", "device"]:
    # `requested` is one of RunParams.decode's values; which is possible depends on the device
    if requested == "device" and not device.startswith("cuda"):
        raise ValueError("--decode device needs a CUDA device")
    on_device = requested == "device" or (requested == "auto" and device.startswith("cuda"))
    return "device" if on_device else "pillow"


def _compile(requested: str, device: str, n_images: int) -> bool:
    # `requested` is one of RunParams.compile's values
    if requested == "auto":
        return device.startswith("cuda") and n_images >= COMPILE_AUTO_MIN_IMAGES
    return requested == "on"
