"""The steps of a run, as plain functions with thin Prefect task wrappers.

start -> catalog -> read the sidecar -> discover (writing files parts as it goes) -> join the
sidecar -> load backbones -> embed (writing parts as it goes) -> record the counts -> neighbours ->
probes of the label columns -> catalog -> finish -> report (of the finished run). Each step takes
and returns plain data, so it can be tested without the engine (`step.fn(...)`), and the flow in
`flows.pipeline` only composes them. The inventory (discovery against the previous run) is
`tasks.inventory`; what every step shares (context, stage clock, failpoints, `runs` rows) is
`tasks.run_context`.

A run's rows in `runs`: 'started', then 'embedded' (its counts, once they are known), then exactly
one final row: 'finished' when every stage passed, 'failed' naming the stage that raised, or
'aborted', written by the next run when this one was killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from . import catalog, discover, lake
from .backbones import resolve_backbone
from .decode import crop_plans
from .decode_pool import DecodeJob
from .embed import Embedder, iter_embedded_batches, thumbnails_table
from .engine import EnginePlan, plan_run, resolve_device
from .inventory import Inventory, discover_source_fn
from .metadata import SidecarResult, join_sidecar, read_sidecar, validate_sidecar
from .params import RunParams
from .progress import Progress
from .run_context import (
    RunContext,
    RunSummary,
    StageClock,
    stage_row,
)
from .run_context import log as _log
from .shards import (
    Shard,
    ShardPlan,
    cluster_gpus,
    engine_for,
    merge_shard_outcomes,
    split_plan,
)
from .sources import RemoteSource, open_source
from .weights import (
    LoadedBackbone,
    WeightsError,
    WeightsSource,
    load_backbone,
    parse_weights_spec,
)

if TYPE_CHECKING:
    from .graph import Searcher

__all__ = [
    "EmbedOutcome",
    "Inventory",
    "ReportFailed",
    "RunContext",
    "RunSummary",
    "StageClock",
    "attach_metadata",
    "build_neighbors",
    "build_maps",
    "reindex_fn",
    "publish_report",
    "discover_source",
    "embed_images",
    "embed_shard",
    "merge_shards",
    "plan_shards",
    "finish_run",
    "load_backbones",
    "probe_labels",
    "read_metadata",
    "record_embedded",
    "rebuild_catalog",
    "record_failure",
    "start_run",
]

# the stages a run's final row can be preceded by; any other stage ends the run
_OPEN_STAGES = ("started", "discovered", "embedded")


@dataclass
class BackboneSet:
    loaded: list[LoadedBackbone]
    weights_random: bool
    message: str | None = None


@dataclass
class EmbedOutcome:
    engine: EnginePlan
    n_unique_images: int = 0
    n_embedded: int = 0
    n_skipped: int = 0
    seconds: float = 0.0
    decode_errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def start_run_fn(params: RunParams) -> RunContext:
    """Prepare the lake (we hold its lock): clear temporaries, mark dead runs, record the start."""
    source = open_source(params.source)
    root = lake.Lake.at(params.lake).ensure()
    removed = root.remove_stale_temporaries()
    if removed:
        _log().warning("removed %d temporary file(s) left by an interrupted run", len(removed))
    started = datetime.now(UTC)
    ctx = RunContext(lake.new_run_id(started), root, source, started, params)
    runs = root.read_table("runs").to_pylist()
    ended = {r["run_id"] for r in runs if r["stage"] not in _OPEN_STAGES}
    latest: dict[str, dict[str, Any]] = {}  # a dead run's furthest row: its counts, if any
    open_rows = (r for r in runs if r["run_id"] not in ended)
    for row in sorted(open_rows, key=lambda r: _OPEN_STAGES.index(r["stage"])):
        latest[row["run_id"]] = row
    for dead in latest.values():
        # we hold the lock, so a run that never ended is not running: it was killed
        aborted = {
            **dead,
            "stage": "aborted",
            "status": "aborted",
            "finished_at": started,
            "message": f"found unfinished by run {ctx.run_id}",
        }
        table = lake.rows_to_table([aborted], lake.RUNS_SCHEMA)
        root.write_part(table, "runs", f"{dead['run_id']}-2-aborted.parquet")
    root.write_part(stage_row(ctx, "started", "running"), "runs", f"{ctx.run_id}-0-started.parquet")
    return ctx


def load_backbones_fn(params: RunParams) -> BackboneSet:
    """Load every requested backbone; only the demo may fall back to random weights, loudly."""
    specs = [resolve_backbone(name) for name in params.backbones]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"--backbone given twice: {', '.join(names)}")
    sources = parse_weights_spec(params.weights, names)
    try:
        # random weights, asked for or not, are flagged on the run and bannered in its report
        is_random = any(source.kind == "random" for source in sources.values())
        return BackboneSet([load_backbone(s, sources[s.name]) for s in specs], is_random)
    except WeightsError as exc:
        if not params.random_fallback:
            raise
        message = (
            "RANDOM WEIGHTS: the ImageNet weights could not be loaded, so these embeddings carry "
            f"no meaning (similarities, neighbours and reports neither). Why: {exc}"
        )
        _log().warning(message)
        random = parse_weights_spec("random", names)
        return BackboneSet([load_backbone(s, random[s.name]) for s in specs], True, message)


@dataclass
class EmbedPlan:
    """What a run must embed: distinct images lacking an embedding, per backbone."""

    outcome: EmbedOutcome
    items: list[DecodeJob]
    missing: dict[str, set[str]]
    weights_ids: dict[str, str]
    sources: dict[str, WeightsSource]
    engine: EnginePlan


def _plan_embedding(
    ctx: RunContext, inventory: Inventory, backbones: BackboneSet, cluster_gpus: float = 0.0
) -> EmbedPlan:
    """The run's engine plan (logged in one line), and the images it lacks at its precision.
    What the run's files lack is asked of the lake (sql/inventory/, on one read connection, the
    run's images resolved once for it), so memory follows what is missing, not the collection."""
    with inventory.reading(ctx.lake, run_images=True) as query:
        return _plan_with(ctx, query, backbones, cluster_gpus)


def _plan_with(
    ctx: RunContext, query: Callable[..., pa.Table], backbones: BackboneSet, cluster_gpus: float
) -> EmbedPlan:
    weights_ids = {b.spec.name: b.weights_id for b in backbones.loaded}
    names = sorted(weights_ids)

    @functools.cache  # read once: the plan asks at its precision, then so do the items
    def missing_at(precision: str) -> dict[str, set[str]]:
        table = query(
            "lacking_embeddings",
            backbones=names,
            weights_ids=[weights_ids[n] for n in names],
            precision=precision,
        )
        missing: dict[str, set[str]] = {name: set() for name in names}
        for backbone, image_id in zip(*table.columns, strict=True):
            missing[backbone.as_py()].add(image_id.as_py())
        return missing

    def lacking(precision: str) -> set[str]:
        return set().union(*missing_at(precision).values())

    engine = plan_run(
        ctx.params, backbones.loaded, ctx.lake, lambda p: len(lacking(p)), cluster_gpus
    )
    _log().info(engine.line())
    todo = sorted(lacking(engine.precision))
    n_unique = query("unique_images").column("n")[0].as_py()
    outcome = EmbedOutcome(engine, n_unique_images=n_unique)
    outcome.n_skipped = n_unique - len(todo)
    # an image the lake has no thumbnail of gets one from the decode that embeds it; one
    # embedded before without it (a lake older than thumbnails, a killed run) is decoded for
    # its thumbnail alone, once
    unthumbed = set(query("lacking_thumbnails").column("image_id").to_pylist())
    embedding = set(todo)
    thumbnail_only = sorted(unthumbed - embedding)
    if thumbnail_only:
        _log().info("making thumbnails of %d images embedded before", len(thumbnail_only))
    wanted = sorted(embedding | unthumbed)
    rows = query("image_files", image_ids=wanted).to_pylist() if wanted else []
    files = {row["image_id"]: row for row in rows}

    def job(image_id: str, **options: Any) -> DecodeJob:
        row = files[image_id]
        return DecodeJob(image_id, discover.fs_path(ctx.source, row), row["format"], **options)

    return EmbedPlan(
        outcome=outcome,
        items=[job(i, thumbnail=i in unthumbed) for i in todo]
        + [job(i, thumbnail=True, crops=False) for i in thumbnail_only],
        missing=missing_at(engine.precision),
        weights_ids=weights_ids,
        sources={b.spec.name: b.source for b in backbones.loaded},
        engine=engine,
    )


def _embed_items(
    ctx: RunContext,
    plan: EmbedPlan,
    items: list[DecodeJob],
    embedder: Embedder,
    crop: list,
    prefix: str,
    part_rows: int,
    progress: bool,
) -> EmbedOutcome:
    """Decode, embed and write `items`; the outcome counts what happened to them."""
    params, engine = ctx.params, plan.engine
    outcome = EmbedOutcome(engine)
    timings: Counter[str] = Counter()
    writer = lake.PartWriter(ctx.lake.folder("embeddings"), prefix, part_rows)
    thumbnail_writer = lake.PartWriter(ctx.lake.folder("thumbnails"), prefix, part_rows)
    thumbnail_only = {item.image_id for item in items if not item.crops}
    started = time.perf_counter()
    try:
        with Progress("embedding", total=len(items), enabled=progress) as bar:
            for batch in iter_embedded_batches(
                items,
                embedder,
                crop,
                batch_size=engine.batch_size,
                workers=engine.workers,
                max_pixels=params.max_pixels,
                decode_timeout=params.decode_timeout,
                pillow_plugins=params.pillow_plugins,
                reader=ctx.source.read if isinstance(ctx.source, RemoteSource) else None,
                timings=timings,
                decode_on_device=engine.decode_on_device,
            ):
                for image_id, code, message in batch.errors:
                    outcome.decode_errors[image_id] = (code, message)
                if batch.thumbnails:
                    thumbnail_writer.add(thumbnails_table(batch.thumbnails, ctx.run_id))
                for image_id, code, message in batch.thumbnail_errors:  # embedded before
                    _log().warning("no thumbnail for %s: %s: %s", image_id, code, message)
                for name, weights_id in plan.weights_ids.items():
                    keep = [i for i, iid in enumerate(batch.ok_ids) if iid in plan.missing[name]]
                    if keep:
                        writer.add(
                            lake.embeddings_table(
                                image_ids=[batch.ok_ids[i] for i in keep],
                                backbone=name,
                                weights_id=weights_id,
                                precision=engine.precision,
                                vectors=batch.embeddings[name][keep],
                                norms=batch.norms[name][keep],
                                run_id=ctx.run_id,
                                storage=params.vector_storage,
                            )
                        )
                outcome.n_embedded += len(batch.ok_ids)
                n_thumbnail_only = len(batch.thumbnail_errors) + sum(
                    image_id in thumbnail_only for image_id, _ in batch.thumbnails
                )
                bar.advance(len(batch.ok_ids) + len(batch.errors) + n_thumbnail_only)
    finally:
        try:
            thumbnail_writer.close()  # what was made is kept, as the embeddings are
        finally:
            writer.close()  # what was embedded is kept, also when the run fails
    outcome.seconds = time.perf_counter() - started
    timings["write"] = writer.seconds + thumbnail_writer.seconds
    timings.update(embedder.seconds)
    outcome.stage_seconds = {k: round(v, 3) for k, v in sorted(timings.items())}
    return outcome


def embed_images_fn(
    ctx: RunContext, inventory: Inventory, backbones: BackboneSet, progress: bool = False
) -> EmbedOutcome:
    """Embed each distinct ok image once per backbone that lacks it; write parts as it goes."""
    plan = _plan_embedding(ctx, inventory, backbones)
    if not plan.items:
        return plan.outcome
    _log().info(
        "embedding %d images (%d already in the lake)", len(plan.items), plan.outcome.n_skipped
    )
    engine = plan.engine
    embedder = Embedder(backbones.loaded, engine.device, engine.precision, compile=engine.compile)
    crop = crop_plans({b.spec.name: b.spec.data_config() for b in backbones.loaded})
    done = _embed_items(
        ctx, plan, plan.items, embedder, crop, ctx.run_id, ctx.params.part_rows, progress
    )
    done.n_unique_images, done.n_skipped = plan.outcome.n_unique_images, plan.outcome.n_skipped
    return done


def plan_shards_fn(ctx: RunContext, inventory: Inventory, backbones: BackboneSet) -> ShardPlan:
    """The run's embedding plan cut into shards of `shard_size` images (for `--runner ray`).

    With `--device auto`, the device is the cluster's: CUDA when the Ray cluster has GPUs (each
    shard then asks for one), so precision, and what counts as already embedded, follow it.
    """
    plan = _plan_embedding(ctx, inventory, backbones, cluster_gpus())
    shard_plan = split_plan(plan, ctx.params.shard_size)
    _log().info(
        "embedding %d images (%d already in the lake) in %d shards on %s",
        len(plan.items),
        plan.outcome.n_skipped,
        len(shard_plan.shards),
        ctx.params.runner,
    )
    return shard_plan


def embed_shard_fn(ctx: RunContext, plan: EmbedPlan, shard: Shard) -> EmbedOutcome:
    """One shard on a worker: backbones loaded once per process, one part written at the end."""
    embedder, crop = engine_for(plan)
    embedder.seconds.clear()
    node = plan.engine.on_this_node(ctx.params.workers)  # its own cores decode
    shard_plan = dataclasses.replace(plan, missing=shard.missing, engine=node)
    prefix = f"{ctx.run_id}-s{shard.index:05d}"
    return _embed_items(ctx, shard_plan, shard.items, embedder, crop, prefix, 1 << 62, False)


def merge_shards_fn(plan: ShardPlan, outcomes: list[EmbedOutcome]) -> EmbedOutcome:
    return merge_shard_outcomes(plan, outcomes)


def read_metadata_fn(ctx: RunContext) -> Any:
    """The sidecar, read and validated before any image is looked at (None without one); the
    --label-column names are checked here too, so a typo costs seconds, not an embedding run."""
    from .probes import check_label_columns

    if not ctx.params.metadata:
        check_label_columns(ctx.params.label_columns, None)
        return None
    frame = validate_sidecar(read_sidecar(Path(ctx.params.metadata)), ctx.params.key)
    check_label_columns(ctx.params.label_columns, list(frame.columns))
    _log().info("sidecar %s: %d rows, keyed by %s", ctx.params.metadata, len(frame), ctx.params.key)
    return frame


def attach_metadata_fn(ctx: RunContext, frame: Any, inventory: Inventory) -> SidecarResult | None:
    """Store the sidecar as this run's metadata part, with path and image_id for joins."""
    if frame is None:
        return None
    result = join_sidecar(frame, ctx.params.key, inventory.rows(ctx.lake))
    if result.n_without_file:
        _log().warning(
            "%d sidecar rows match no file under SOURCE (kept; counted as n_metadata_without_file)",
            result.n_without_file,
        )
    table = pa.Table.from_pandas(result.frame, preserve_index=False)
    ctx.lake.write_part(table, "metadata", f"{ctx.run_id}.parquet")
    return result


def record_embedded_fn(
    ctx: RunContext,
    inventory: Inventory,
    backbones: BackboneSet,
    outcome: EmbedOutcome,
    sidecar: SidecarResult | None,
    stage_seconds: dict[str, float],
) -> RunSummary:
    """Record the run's counts (its 'embedded' row; still running); the run summary.

    A file whose header passed discovery but whose pixels failed to decode gets a new version:
    its row as an error, written now, so `files` shows what it turned out to be."""
    failed_ids = sorted(outcome.decode_errors)
    with inventory.reading(ctx.lake) as query:
        if failed_ids:
            failed = query("decode_failed", image_ids=failed_ids).to_pylist()
            recorded_at = datetime.now(UTC)
            for row in failed:
                code, message = outcome.decode_errors[row["image_id"]]
                row.update(status="error", error_code=code, error_message=message)
                row["recorded_at"] = recorded_at
            table = lake.rows_to_table(failed, lake.FILES_SCHEMA)
            ctx.lake.write_part(table, "files", f"{ctx.run_id}-decode-errors.parquet")
        errors = query("error_counts").to_pylist()
    codes = {row["error_code"]: row["n"] for row in errors}
    n_error = sum(codes.values())
    n_new = outcome.n_embedded
    summary = RunSummary(
        run_id=ctx.run_id,
        lake=str(ctx.lake),
        status="running",
        **inventory.counts,
        n_ok=inventory.counts["n_files"] - n_error,
        n_error=n_error,
        n_unique_images=outcome.n_unique_images - len(outcome.decode_errors),
        n_embedded=n_new,
        n_skipped=outcome.n_skipped,
        error_counts=dict(sorted(codes.items())),
        n_metadata_rows=sidecar.n_rows if sidecar else None,
        n_metadata_without_file=sidecar.n_without_file if sidecar else None,
        n_files_without_metadata=sidecar.n_files_without_row if sidecar else None,
        device=outcome.engine.device,
        precision=outcome.engine.precision,
        weights={b.spec.name: b.weights_id for b in backbones.loaded},
        weights_random=backbones.weights_random,
        images_per_second=n_new / outcome.seconds if outcome.seconds > 0 else None,
        stage_seconds={**stage_seconds, **outcome.stage_seconds},
        message=backbones.message,
        engine=outcome.engine,
    )
    ctx.lake.write_part(
        stage_row(ctx, "embedded", "running", **summary.row()),
        "runs",
        f"{ctx.run_id}-0-embedded.parquet",
    )
    return summary


def finish_run_fn(ctx: RunContext, summary: RunSummary, stages: dict[str, float]) -> RunSummary:
    """Record that every stage passed: the run's one final row, 'finished'."""
    ended = datetime.now(UTC)
    finished = dataclasses.replace(
        summary,
        status="finished",
        finished_at=ended,
        seconds=(ended - ctx.started_at).total_seconds(),
        stage_seconds={**summary.stage_seconds, **stages},
    )
    _write_final_row(ctx, "finished", finished.row())
    return finished


def record_failure_fn(
    ctx: RunContext,
    stage: str,
    error: BaseException,
    summary: RunSummary | None,
    stages: dict[str, float],
) -> None:
    """Record the run's one final row, 'failed', naming the stage that raised and why; with the
    run's counts when it got as far as recording them."""
    reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}"
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    ended = datetime.now(UTC)
    row = summary.row() if summary else {}
    row.update(
        finished_at=ended,
        seconds=(ended - ctx.started_at).total_seconds(),
        stage_seconds=lake.to_json({**(summary.stage_seconds if summary else {}), **stages}),
        message=f"{stage}: {reason}" + (f": {detail}" if detail else ""),
    )
    _write_final_row(ctx, "failed", row)


def _write_final_row(ctx: RunContext, stage: str, values: dict[str, Any]) -> None:
    row = stage_row(ctx, stage, stage, **values)
    ctx.lake.write_part(row, "runs", f"{ctx.run_id}-1-{stage}.parquet")


def build_neighbors_fn(ctx: RunContext, engine: EnginePlan) -> dict[str, int]:
    """Add the images not yet in the neighbour graph; recompute backbone agreement (CKA). The
    graph is computed on this process's device, the run's engine plan's `local_device`."""
    from .neighbors import build_neighbor_graph

    with _searcher(ctx.params.runner) as search:
        written = build_neighbor_graph(
            ctx.lake,
            k=ctx.params.neighbors_k,
            device=engine.local_device,
            ann_threshold=ctx.params.ann_threshold,
            search=search,
        )
    _log().info("neighbour graph: lists written per group %s", written)
    return written


@contextlib.contextmanager
def _searcher(runner: str) -> Iterator[Searcher]:
    """Who runs the ANN searches: this process (`local`), or the Ray cluster `runner` names,
    connected for the block (a run's Ray task runner has connected already)."""
    from .graph import search_here

    if runner == "local":
        yield search_here
        return
    from .index_shards import RaySearch, ray_connection

    with ray_connection(runner):
        yield RaySearch()


def build_maps_fn(ctx: RunContext, inventory: Inventory) -> list[dict[str, Any]]:
    """Each group's 2-D map: the images new since its fit placed from their neighbours, or a
    (re)fit (tasks.maps); one log line per group: fitted or placed, how many, seconds. The
    collection is the run's own 'ok' files when the lake holds one source (no catalog query)."""
    from .maps import run_collection, update_maps
    from .run_context import source_text

    current = run_collection(ctx.lake, source_text(ctx), inventory)
    outcomes = update_maps(ctx.lake, ctx.run_id, current_of=ctx.run_id, current=current)
    for outcome in outcomes:
        _log().info(outcome.line())
    return [dataclasses.asdict(outcome) for outcome in outcomes]


def reindex_fn(root: lake.Lake, device: str = "auto", runner: str = "local") -> dict[str, int]:
    """Rebuild the graph, its indexes, every group's map (refitted) and the catalog from the
    Parquet, under the writer's lock. `runner` (a RunParams.runner): ray or ray=ADDRESS shards
    the ANN searches across that Ray cluster's workers (tasks.index_shards)."""
    from .maps import update_maps
    from .neighbors import build_neighbor_graph
    from .params import RunParams

    defaults = RunParams.model_fields
    with root.lock(), _searcher(runner) as search:
        root.remove_stale_temporaries()
        written = build_neighbor_graph(
            root,
            k=defaults["neighbors_k"].default,
            device=resolve_device(device),
            ann_threshold=defaults["ann_threshold"].default,
            rebuild=True,
            search=search,
        )
        catalog.build_catalog(root)  # the map reads the current collection through it
        update_maps(root, lake.new_run_id(), refit=True)
    return written


def probe_labels_fn(
    ctx: RunContext,
    inventory: Inventory,
    sidecar: SidecarResult | None,
    summary: RunSummary,
) -> list[dict[str, Any]]:
    """Linear probes and label issues per backbone and --label-column, on the stored embeddings
    of this run's images (a rerun re-probes without embedding anything)."""
    from .probes import labels_of, run_probes

    if not ctx.params.label_columns:
        return []
    frame = sidecar.frame if sidecar else None
    files = inventory.rows(ctx.lake)  # by path
    labels = {c: labels_of(c, frame, files) for c in ctx.params.label_columns}
    paths: dict[str, str] = {}
    for row in files:
        if row["status"] == "ok" and row["image_id"] is not None:
            paths.setdefault(row["image_id"], row["path"])
    engine = summary.engine
    if engine is None:
        raise RuntimeError("probes need the run's engine plan: its summary carries none")
    groups = [
        lake.GroupKey(name, weights, engine.precision) for name, weights in summary.weights.items()
    ]
    k = ctx.params.neighbors_k
    rows = run_probes(ctx.lake, ctx.run_id, labels, paths, groups, engine.local_device, k)
    for row in rows:
        _log().info(
            "probe %s on %s: accuracy %s (chance %s), %s label issues",
            row["column"],
            row["backbone"],
            row.get("accuracy"),
            row.get("chance"),
            row.get("n_issues"),
        )
    return rows


class ReportFailed(RuntimeError):
    """A finished run whose report could not be built: its collection is in `images` all the
    same; `embedlake report --lake LAKE --source SOURCE` builds the report again."""

    def __init__(self, run_id: str, error: BaseException):
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        super().__init__(
            f"run {run_id} finished (its images are queryable) but its report failed: "
            f"{type(error).__name__}" + (f": {detail}" if detail else "")
        )
        self.run_id = run_id


def publish_report_fn(ctx: RunContext, summary: RunSummary) -> str:
    """Write the finished run's HTML report, with thumbnails from the SOURCE this run read, and
    publish its summary and key tables as Prefect artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from .report import build_report

    report = build_report(ctx.lake, ctx.run_id, source=ctx.source)
    uri = Path(report["path"]).as_uri()
    errors = ", ".join(f"{k} {v}" for k, v in summary.error_counts.items()) or "none"
    banner = (
        "\n\n**RANDOM WEIGHTS: these embeddings mean nothing.**" if summary.weights_random else ""
    )
    rate = summary.images_per_second
    create_markdown_artifact(
        key="embedlake-run-summary",
        description=f"embedlake run {ctx.run_id}",
        markdown=(
            f"# embedlake run {ctx.run_id}{banner}\n\n"
            f"| | |\n|---|---|\n"
            f"| files | {summary.n_files} ({summary.n_ok} ok, {summary.n_error} errors) |\n"
            f"| errors by code | {errors} |\n"
            f"| images embedded / skipped | {summary.n_embedded} / {summary.n_skipped} |\n"
            f"| throughput | {f'{rate:.1f} images/s' if rate else '-'} |\n"
            f"| device / precision | {summary.device} / {summary.precision} |\n"
            f"| lake | {ctx.lake} |\n\n"
            f"Report: [{report['path']}]({uri})\n"
        ),
    )
    folder = Path(report["path"]).parent
    for name in ("errors", "near_duplicates", "label_purity"):
        csv = folder / f"{name}.csv"
        if csv.is_file():
            import pyarrow.csv as pacsv

            rows = pacsv.read_csv(csv).slice(0, 50).to_pylist()
            if rows:
                create_table_artifact(
                    key=f"embedlake-{name.replace('_', '-')}",
                    table=rows,
                    description=f"{name} of run {ctx.run_id} (first 50 rows; report: {uri})",
                )
    return report["path"]


def rebuild_catalog_fn(root: lake.Lake) -> Path:
    return catalog.build_catalog(root)


def _as_task(fn, name: str, **options):
    # models, file lists and contexts are not cacheable inputs: every step runs every time
    return task(fn, name=name, cache_policy=NO_CACHE, **options)


start_run = _as_task(start_run_fn, "start-run")
discover_source = _as_task(discover_source_fn, "discover")
load_backbones = _as_task(load_backbones_fn, "load-backbones")
embed_images = _as_task(embed_images_fn, "embed")
attach_metadata = _as_task(attach_metadata_fn, "sidecar-metadata")
read_metadata = _as_task(read_metadata_fn, "read-sidecar")
record_embedded = _as_task(record_embedded_fn, "record-embedded")
finish_run = _as_task(finish_run_fn, "finish-run")
record_failure = _as_task(record_failure_fn, "record-failure")
build_neighbors = _as_task(build_neighbors_fn, "build-neighbors")
build_maps = _as_task(build_maps_fn, "build-maps")
probe_labels = _as_task(probe_labels_fn, "probe-labels")
publish_report = _as_task(publish_report_fn, "publish-report")
plan_shards = _as_task(plan_shards_fn, "plan-shards")
# a Python error in a shard is retried once here; a crashed worker process is retried by Ray
embed_shard = _as_task(embed_shard_fn, "embed-shard", retries=1)
merge_shards = _as_task(merge_shards_fn, "merge-shards")
rebuild_catalog = _as_task(rebuild_catalog_fn, "rebuild-catalog", retries=2, retry_delay_seconds=1)
