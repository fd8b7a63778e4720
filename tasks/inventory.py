"""A run's inventory of SOURCE: which files exist, which are new, changed, unchanged or gone since
the source's previous run, and their `files` rows (`discover` probes the files themselves)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from . import catalog, discover, lake
from .decode_pool import load_pillow_plugins
from .run_context import RunContext, failpoint, log, source_text, stage_row

__all__ = ["Inventory", "discover_source_fn", "previous_files"]


class Inventory:
    """The `files` rows of a run (as discovered), the seconds discovery took, and how the files
    compare with the source's previous run (n_files_new, _changed, _unchanged, _gone).

    A plain class, not a dataclass, on purpose: Prefect walks a task's dataclass arguments field
    by field (to resolve futures), which cost ~2 s per task call at 20,000 rows; it leaves other
    objects alone."""

    def __init__(self, rows: list[dict[str, Any]], seconds: float, counts: dict[str, Any]):
        self.rows, self.seconds, self.counts = rows, seconds, counts


def previous_files(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """The source's rows from its previous run whose discovery completed, by path."""
    with catalog.connect_read_only(ctx.lake) as con:
        table = con.sql(
            catalog.sql_text("inventory", "previous_files.sql"),
            params={"source": source_text(ctx), "run_id": ctx.run_id},
        ).to_arrow_table()
    return {row["path"]: row for row in table.to_pylist()}


def discover_source_fn(ctx: RunContext) -> Inventory:
    """Inventory SOURCE against its previous run: an unchanged file (same path, size and mtime)
    is not opened, its row is reused; rows of new and changed files are written as parts chunk by
    chunk as they are probed (so a run that fails later still leaves its inventory), then the
    paths that are gone, then the run's 'discovered' row with the counts."""
    started = time.perf_counter()
    load_pillow_plugins(ctx.params.pillow_plugins)
    known = {} if ctx.params.rehash else previous_files(ctx)
    # the lake is not inventoried when it lies under SOURCE (a folder, or a URL's prefix)
    lake_at = ctx.lake.path or ctx.lake.url
    rows: list[dict[str, Any]] = []
    counts = Counter(n_files_new=0, n_files_changed=0, n_files_unchanged=0)
    chunks = discover.iter_discovered(
        ctx.source, [lake_at], ctx.params.max_pixels, ctx.params.part_rows, known
    )
    for seq, chunk in enumerate(chunks):
        written = []
        for row, reused in chunk:
            row["run_id"] = ctx.run_id
            rows.append(row)
            if reused:
                counts["n_files_unchanged"] += 1
            else:
                counts["n_files_changed" if row["path"] in known else "n_files_new"] += 1
                written.append({**row, "recorded_at": datetime.now(UTC)})
        if written:
            table = lake.rows_to_table(written, lake.FILES_SCHEMA)
            ctx.lake.write_part(table, "files", f"{ctx.run_id}-{seq:06d}.parquet")
            failpoint("discover-part")
    seen = {row["path"] for row in rows}
    gone = [{"run_id": ctx.run_id, "path": p} for p in sorted(set(known) - seen)]
    if gone:
        table = lake.rows_to_table(gone, lake.FILES_GONE_SCHEMA)
        ctx.lake.write_part(table, "files_gone", f"{ctx.run_id}.parquet")
    summary = {
        **counts,
        "n_files": len(rows),
        "n_files_gone": len(gone),
        "files_snapshot": not known,  # every row written: the run is a snapshot
    }
    ctx.lake.write_part(
        stage_row(ctx, "discovered", "running", **summary),
        "runs",
        f"{ctx.run_id}-0-discovered.parquet",
    )
    log().info(
        "discovered %d files under %s: %d new, %d changed, %d unchanged (not read), %d gone",
        len(rows),
        ctx.source,
        counts["n_files_new"],
        counts["n_files_changed"],
        counts["n_files_unchanged"],
        len(gone),
    )
    return Inventory(rows, time.perf_counter() - started, summary)
