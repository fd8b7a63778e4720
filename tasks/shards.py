"""Sharded embedding for `--runner ray`: the driver plans, shard tasks embed, the driver merges.

The embedding plan (which distinct images lack which backbone's embedding) is split into shards
of `shard_size` images. A shard task loads the backbones once per worker process (a module-level
cache, so later shards on that worker reuse them), checks that it loaded the same weights the
driver did (same weights_id), embeds its images and writes exactly one Parquet part,
`embeddings/<run_id>-s<shard>.parquet`, when it is done: a shard that fails and is retried
rewrites the same part under the same name, so a retry never duplicates rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .decode_pool import DecodeJob

__all__ = [
    "Shard",
    "ShardPlan",
    "cluster_gpus",
    "engine_for",
    "merge_shard_outcomes",
    "shard_resources",
    "split_plan",
]

_ENGINES: dict[tuple, tuple[Any, list]] = {}  # per worker process: (Embedder, crop plans)


@dataclass
class Shard:
    index: int
    items: list[DecodeJob]
    missing: dict[str, set[str]]


@dataclass
class ShardPlan:
    """The shards, and the run's EmbedPlan without its item lists (shipped to every task)."""

    embed: Any
    shards: list[Shard] = field(default_factory=list)
    started: float = 0.0


def split_plan(plan: Any, shard_size: int) -> ShardPlan:
    """Cut an EmbedPlan's items into shards, each carrying only its own 'missing' entries."""
    import dataclasses
    import time

    shards = []
    for index, start in enumerate(range(0, len(plan.items), shard_size)):
        items = plan.items[start : start + shard_size]
        ids = {item.image_id for item in items}
        missing = {name: ids & wanted for name, wanted in plan.missing.items()}
        shards.append(Shard(index, items, missing))
    slim = dataclasses.replace(plan, items=[], missing={})
    return ShardPlan(slim, shards, time.perf_counter())


def cluster_gpus() -> float:
    """GPUs in the Ray cluster this process is connected to (0 when not connected)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def shard_resources() -> dict[str, float]:
    """Ray resources for one shard task: a GPU when the cluster has them, else one CPU."""
    return {"num_gpus": 1} if cluster_gpus() > 0 else {"num_cpus": 1}


def engine_for(plan: Any) -> tuple[Any, list]:
    """This worker process's Embedder and crop plans for `plan`'s backbones, built once, as
    the run's engine plan (`plan.engine`, resolved on the driver) says."""
    import torch

    from .backbones import resolve_backbone
    from .decode import crop_plans
    from .embed import Embedder
    from .weights import load_backbone

    engine = plan.engine  # the driver's plan: device, precision and compile are its
    key = (tuple(sorted(plan.weights_ids.items())), engine.device, engine.precision, engine.compile)
    if key not in _ENGINES:
        loaded = []
        for name, expected in plan.weights_ids.items():
            backbone = load_backbone(resolve_backbone(name), plan.sources[name])
            if backbone.weights_id != expected:
                raise RuntimeError(
                    f"worker loaded {backbone.weights_id} for {name}, the driver {expected}: "
                    "weights files must be the same on every node"
                )
            loaded.append(backbone)
        # one shard task per CPU slot: keep torch to the slot's share of the node
        torch.set_num_threads(1)
        crop = crop_plans({b.spec.name: b.spec.data_config() for b in loaded})
        embedder = Embedder(loaded, engine.device, engine.precision, compile=engine.compile)
        _ENGINES[key] = (embedder, crop)
    return _ENGINES[key]


def merge_shard_outcomes(plan: ShardPlan, outcomes: list[Any]) -> Any:
    """One run outcome from the shards' (counts, errors, stage seconds; wall time since plan)."""
    import time
    from collections import Counter

    merged = plan.embed.outcome
    stages: Counter[str] = Counter()
    for outcome in outcomes:
        merged.n_embedded += outcome.n_embedded
        merged.decode_errors.update(outcome.decode_errors)
        stages.update(outcome.stage_seconds)
    merged.seconds = time.perf_counter() - plan.started
    merged.stage_seconds = {k: round(v, 3) for k, v in sorted(stages.items())}
    return merged
