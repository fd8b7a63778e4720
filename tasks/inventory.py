"""A run's inventory of SOURCE: which files exist, which are new, changed, unchanged or gone since
the source's previous run, and their `files` rows (`discover` probes the files themselves).

Nothing here holds a row per file in memory: a rerun writes SOURCE's stats to a scratch Parquet
file as it walks, DuckDB compares them with the previous run's rows (out of core, under a memory
limit), and only the files it finds new or changed are opened, a chunk at a time. The run's
files are then what `run_files([run_id])` says (the unchanged rows stay where earlier runs wrote
them), and the later stages ask the lake through the queries in sql/inventory/.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from . import catalog, discover, lake
from .decode_pool import load_pillow_plugins
from .run_context import RunContext, failpoint, log, source_text, stage_row

__all__ = ["Inventory", "discover_source_fn"]


class Inventory:
    """A run's discovery: the seconds it took and how SOURCE compares with the source's previous
    run (n_files, n_files_new, _changed, _unchanged, _gone, files_snapshot). The run's files
    themselves are in the lake: `query` runs a statement of sql/inventory/ over them.

    A plain class, not a dataclass, on purpose: Prefect walks a task's dataclass arguments field
    by field (to resolve futures); it leaves other objects alone."""

    def __init__(self, run_id: str, seconds: float, counts: dict[str, Any]):
        self.run_id, self.seconds, self.counts = run_id, seconds, counts

    def query(self, root: lake.Lake, name: str, **params: Any) -> pa.Table:
        """sql/inventory/`name`.sql over this run's files (its `run_id` given), as Arrow."""
        with self.reading(root) as query:
            return query(name, **params)

    @contextlib.contextmanager
    def streaming(
        self, root: lake.Lake, name: str, batch_rows: int = 65_536, **params: Any
    ) -> Iterator[pa.RecordBatchReader]:
        """sql/inventory/`name`.sql over this run's files, as batches read while the block runs
        (the collection's ids at 10 M are ~0.8 GB as Arrow: never held whole)."""
        with catalog.connect_read_only(root) as con:
            text, given = self._statement(name, params)
            yield con.sql(text, params=given).to_arrow_reader(batch_rows)

    def _statement(self, name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """sql/inventory/`name`.sql and its parameters: this run's `run_id` where it names it
        (DuckDB refuses a parameter a statement does not use)."""
        text = catalog.sql_text("inventory", f"{name}.sql")
        return text, {"run_id": self.run_id, **params} if "$run_id" in text else params

    @contextlib.contextmanager
    def reading(
        self, root: lake.Lake, run_images: bool = False
    ) -> Iterator[Callable[..., pa.Table]]:
        """`query` on one read connection, for a stage that asks several things (a read
        connection costs ~0.2 s to open: it makes the catalog's views its own). `run_images`:
        first resolve the run's images once into the connection's `run_images` table
        (sql/inventory/run_images.sql), which the embed plan's statements read."""
        with catalog.connect_read_only(root) as con:

            def query(name: str, **params: Any) -> pa.Table:
                text, given = self._statement(name, params)
                return con.sql(text, params=given).to_arrow_table()

            if run_images:
                con.execute(*self._statement("run_images", {}))
            yield query

    def rows(self, root: lake.Lake) -> list[dict[str, Any]]:
        """The run's `files` rows as dicts, by path: for a sidecar's join and the probes' labels
        (those hold a row per file anyway)."""
        return self.query(root, "run_files").to_pylist()


def _previous_discovery(ctx: RunContext, con: Any) -> str | None:
    """The source's latest run before this one whose discovery completed."""
    found = con.sql(
        catalog.sql_text("inventory", "previous_discovery.sql"),
        params={"source": source_text(ctx), "run_id": ctx.run_id},
    ).fetchall()
    return found[0][0] if found else None


def discover_source_fn(ctx: RunContext) -> Inventory:
    """Inventory SOURCE against its previous run: an unchanged file (same path, size and mtime)
    is not opened and nothing is written for it; rows of new and changed files are written as
    parts chunk by chunk as they are probed (so a run that fails later still leaves its
    inventory), then the paths that are gone, then the run's 'discovered' row with the counts."""
    started = time.perf_counter()
    load_pillow_plugins(ctx.params.pillow_plugins)
    # the lake is not inventoried when it lies under SOURCE (a folder, or a URL's prefix)
    skip = [ctx.lake.path or ctx.lake.url]
    counts = Counter(n_files_new=0, n_files_changed=0, n_files_unchanged=0)
    with (
        catalog.connect_read_only(ctx.lake) as con,
        discover.Listing(ctx.source, skip) as listing,
        tempfile.TemporaryDirectory(prefix="embedlake-listing-") as scratch,
    ):
        previous = None if ctx.params.rehash else _previous_discovery(ctx, con)
        if previous is None:  # a first run, or --rehash: every file is probed and written
            n_files = n_gone = 0
            chunks = listing.probed(ctx.params.max_pixels, ctx.params.part_rows)
            for seq, chunk in enumerate(chunks):
                _write_rows(ctx, chunk, seq)
                counts["n_files_new"] += len(chunk)
                n_files += len(chunk)
        else:
            path = Path(scratch) / "listing.parquet"
            n_files = listing.write(path)
            n_gone = _compare(ctx, con, listing, previous, path, counts)
    counts["n_files_unchanged"] = n_files - counts["n_files_new"] - counts["n_files_changed"]
    summary = {
        **counts,
        "n_files": n_files,
        "n_files_gone": n_gone,
        "files_snapshot": previous is None,  # every row written: the run is a snapshot
    }
    ctx.lake.write_part(
        stage_row(ctx, "discovered", "running", **summary),
        "runs",
        f"{ctx.run_id}-0-discovered.parquet",
    )
    log().info(
        "discovered %d files under %s: %d new, %d changed, %d unchanged (not read), %d gone",
        n_files,
        ctx.source,
        counts["n_files_new"],
        counts["n_files_changed"],
        counts["n_files_unchanged"],
        n_gone,
    )
    return Inventory(ctx.run_id, time.perf_counter() - started, summary)


def _compare(
    ctx: RunContext,
    con: Any,
    listing: discover.Listing,
    previous: str,
    path: Path,
    counts: Counter,
) -> int:
    """Probe and write the listed files that are new or changed since `previous`, then record
    the paths that are gone; counts the new and changed; returns how many are gone."""
    params = {"previous": previous}
    con.register("listing", ds.dataset(path, format="parquet"))
    reader = con.sql(
        catalog.sql_text("inventory", "to_probe.sql"),
        params={**params, "stable_errors": sorted(discover.STABLE_ERRORS)},
    ).to_arrow_reader(ctx.params.part_rows)
    for seq, batch in enumerate(reader):
        names = batch.column("name").to_pylist()
        known = batch.column("known").to_pylist()
        rows = listing.probe(names, ctx.params.max_pixels)
        _write_rows(ctx, rows, seq)
        n_changed = sum(known)
        counts["n_files_changed"] += n_changed
        counts["n_files_new"] += len(rows) - n_changed
    gone = con.sql(catalog.sql_text("inventory", "gone.sql"), params=params).to_arrow_table()
    if gone.num_rows:
        table = gone.append_column("run_id", pa.array([ctx.run_id] * gone.num_rows, pa.string()))
        table = table.select(lake.FILES_GONE_SCHEMA.names).cast(lake.FILES_GONE_SCHEMA)
        ctx.lake.write_part(table, "files_gone", f"{ctx.run_id}.parquet")
    return gone.num_rows


def _write_rows(ctx: RunContext, rows: list[dict[str, Any]], seq: int) -> None:
    """One part of this run's new `files` rows (`seq`: the part's number in the run)."""
    if not rows:
        return
    recorded_at = datetime.now(UTC)
    written = [{**row, "run_id": ctx.run_id, "recorded_at": recorded_at} for row in rows]
    table = lake.rows_to_table(written, lake.FILES_SCHEMA)
    ctx.lake.write_part(table, "files", f"{ctx.run_id}-{seq:06d}.parquet")
    failpoint("discover-part")
