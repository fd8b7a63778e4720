"""The embedlake run as a Prefect flow: a table of contents over the steps in `tasks.steps`.

The flow holds the lake's writer lock for the whole run, so two runs on one lake never write at
once: the second waits for the first (and says so). Readers never take the lock.
"""

# no `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# the live annotations, and a deployment run validates `params` against RunParams
import sys

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
def embed_collection(params: RunParams, progress: bool = False) -> steps.RunSummary:
    """Inventory SOURCE, embed every new image with each backbone, update the neighbour graph
    and the catalog, record the run finished, then publish its report. Each stage's outcome is
    recorded once: the run ends 'finished', or 'failed' naming the stage that raised.

    The report comes after 'finished' because it describes `images`, the latest finished run:
    built before, it showed the previous collection. A report that then fails leaves the run
    finished and its collection queryable, and raises `steps.ReportFailed` (the flow run fails,
    and the CLI exits non-zero saying the run finished but its report did not)."""
    lake = Lake.at(params.lake)
    with lake.lock(on_wait=_say_waiting):
        ctx = steps.start_run(params)
        stage = steps.StageClock()
        summary = None
        try:
            with stage("open-catalog"):
                steps.rebuild_catalog(lake)  # readers see the run as 'running' from the start
            with stage("read-sidecar"):  # a bad sidecar fails in seconds, before any image
                sidecar_frame = steps.read_metadata(ctx)
            with stage("discover"):
                inventory = steps.discover_source(ctx)
            with stage("sidecar"):
                sidecar = steps.attach_metadata(ctx, sidecar_frame, inventory)
            with stage("load-backbones"):
                backbones = steps.load_backbones(params)
            with stage("embed"):
                outcome = _embed(ctx, inventory, backbones, progress)
                summary = steps.record_embedded(
                    ctx, inventory, backbones, outcome, sidecar, stage.seconds
                )
            with stage("neighbors"):
                steps.build_neighbors(ctx, summary.engine)
            with stage("map"):  # a 2-D place per image: new ones from their neighbours
                steps.build_maps(ctx, inventory)
            with stage("probes"):  # --label-column: linear probes and label issues
                steps.probe_labels(ctx, inventory, sidecar, summary)
            # views read the Parquet when queried: the 'finished' row written next shows
            # through this catalog, and a catalog that cannot be built fails the run
            with stage("catalog"):
                steps.rebuild_catalog(lake)
            summary = steps.finish_run(ctx, summary, stage.seconds)
        except BaseException as exc:
            steps.record_failure(ctx, stage.current, exc, summary, stage.seconds)
            try:  # readers see the failure and what the run wrote
                steps.rebuild_catalog(lake)
            except Exception as catalog_error:  # the run's own error is the one to raise
                get_run_logger().warning(
                    "the catalog could not be rebuilt after the failure: %s", catalog_error
                )
            raise
        if ctx.params.no_report:
            return summary
        with stage("report"):  # the run is finished: a failure here is the report's alone
            try:
                summary.report = steps.publish_report(ctx, summary)
            except Exception as exc:
                raise steps.ReportFailed(ctx.run_id, exc) from exc
    return summary


def _embed(ctx, inventory, backbones, progress: bool) -> steps.EmbedOutcome:
    """The embedding stage: in this process, or as shard tasks on the Ray task runner."""
    if ctx.params.runner == "local":
        return steps.embed_images(ctx, inventory, backbones, progress)
    from prefect_ray.context import remote_options

    shards = steps.plan_shards(ctx, inventory, backbones)
    with remote_options(**shard_resources()):  # a GPU each when there are GPUs
        futures = steps.embed_shard.map(unmapped(ctx), unmapped(shards.embed), shards.shards)
    return steps.merge_shards(shards, futures.result())


def with_runner(runner: str):
    """The run flow with the task runner `--runner` asks for (shard tasks go to it); `runner`
    is a RunParams.runner, validated there."""
    if runner == "local":
        return embed_collection
    try:
        from prefect_ray.task_runners import RayTaskRunner
    except ImportError as exc:
        raise ImportError("--runner ray needs the ray extra: pip install 'embedlake[ray]'") from exc
    address = runner.partition("=")[2] or None
    return embed_collection.with_options(task_runner=RayTaskRunner(address=address))
