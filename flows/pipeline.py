"""The embedlake run as a Prefect flow: a table of contents over the steps in `tasks.steps`.

The flow holds the lake's writer lock for the whole run, so two runs on one lake never write at
once: the second waits for the first (and says so). Readers never take the lock.
"""

# no `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# the live annotations, and a deployment run validates `params` against RunParams
import sys
from typing import Any

from prefect import flow, get_run_logger, unmapped

from embedlake.tasks import steps
from embedlake.tasks.lake import Lake
from embedlake.tasks.params import RunParams
from embedlake.tasks.shards import shard_resources

__all__ = ["embed_collection", "with_runner"]


def _say_waiting(message: str) -> None:
    get_run_logger().warning(message)
    print(f"embedlake: {message}", file=sys.stderr, flush=True)


@flow(name="embedlake-run")
def embed_collection(params: RunParams, progress: bool = False) -> dict[str, Any]:
    """Inventory SOURCE, embed every new image with each backbone, rebuild the neighbour graph
    and the catalog, and publish the run's report."""
    lake = Lake.at(params.lake)
    with lake.lock(on_wait=_say_waiting):
        ctx = steps.start_run(params)
        steps.build_catalog(lake)  # readers see the run as 'running' from the start
        try:
            inventory = steps.discover_source(ctx)
            backbones = steps.load_backbones(params)
            if params.runner == "local":
                outcome = steps.embed_images(ctx, inventory, backbones, progress)
            else:
                from prefect_ray.context import remote_options

                shards = steps.plan_shards(ctx, inventory, backbones)
                with remote_options(**shard_resources()):  # a GPU each when there are GPUs
                    futures = steps.embed_shard.map(
                        unmapped(ctx), unmapped(shards.embed), shards.shards
                    )
                outcome = steps.merge_shards(shards, futures.result())
            sidecar = steps.attach_metadata(ctx, inventory)
            summary = steps.finish_run(ctx, inventory, backbones, outcome, sidecar)
            steps.build_neighbors(ctx)
        except BaseException as exc:
            steps.record_failure(ctx, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            steps.build_catalog(lake)
        summary["report"] = steps.publish_report(ctx, summary)
    return summary


def with_runner(runner: str):
    """The run flow with the task runner `--runner` asks for (shard tasks go to it)."""
    if runner == "local":
        return embed_collection
    if runner != "ray" and not runner.startswith("ray="):
        raise ValueError(f"--runner {runner!r}: expected local, ray or ray=ADDRESS")
    try:
        from prefect_ray.task_runners import RayTaskRunner
    except ImportError as exc:
        raise ImportError("--runner ray needs the ray extra: pip install 'embedlake[ray]'") from exc
    address = runner.partition("=")[2] or None
    return embed_collection.with_options(task_runner=RayTaskRunner(address=address))
