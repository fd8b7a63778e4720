"""What every step of a run shares: its context, its stage clock, the failpoints the tests kill it
at, its log, and the rows it writes to `runs`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from prefect import get_run_logger

from . import discover, lake
from .params import RunParams
from .sources import RemoteSource

if TYPE_CHECKING:  # tasks.engine logs through this module: the plan's type only, for hints
    from .engine import EnginePlan

__all__ = [
    "FAILPOINT_ENV",
    "RunContext",
    "RunSummary",
    "StageClock",
    "failpoint",
    "log",
    "source_text",
    "stage_row",
]

FAILPOINT_ENV = "EMBEDLAKE_FAILPOINT"


def failpoint(name: str) -> None:
    """SIGKILL this process when $EMBEDLAKE_FAILPOINT names this point: how the tests kill a run
    at an exact stage (a kill from outside could land anywhere). Unset, it does nothing."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class StageClock:
    """The stage a run is in, and the seconds each stage took; `with clock("embed"): ...`."""

    def __init__(self) -> None:
        self.current = "start"
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        failpoint(name)
        self.current = name
        started = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


@dataclass
class RunContext:
    run_id: str
    lake: lake.Lake
    source: Path | RemoteSource
    started_at: datetime
    params: RunParams


@dataclass
class RunSummary:
    """A run's outcome as the steps hand it on and the CLI prints it: its counts (the 'embedded'
    row), then how it ended. Its dicts are dicts here; `row()` turns them into the JSON text the
    `runs` table holds, and nothing else does."""

    run_id: str
    lake: str
    status: str
    n_files: int
    n_files_new: int
    n_files_changed: int
    n_files_unchanged: int
    n_files_gone: int
    files_snapshot: bool
    n_ok: int
    n_error: int
    n_unique_images: int
    n_embedded: int
    n_skipped: int
    error_counts: dict[str, int]  # error code -> files
    n_metadata_rows: int | None
    n_metadata_without_file: int | None
    n_files_without_metadata: int | None
    device: str
    precision: str
    weights: dict[str, str]  # backbone -> weights_id
    weights_random: bool
    images_per_second: float | None
    stage_seconds: dict[str, float]  # run stages, and the engine's split of embedding
    message: str | None
    finished_at: datetime | None = None
    seconds: float | None = None
    report: str | None = None  # the report's index.html, once published
    engine: EnginePlan | None = None  # how it embedded (device and precision are its); no column

    def row(self) -> dict[str, Any]:
        """Its columns of a `runs` row, for `stage_row` (which sets run_id and status itself)."""
        values = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("run_id", "status", "lake", "report", "engine")
        }
        for name in ("error_counts", "weights", "stage_seconds"):
            values[name] = lake.to_json(values[name])
        return values


def log():
    import logging

    try:
        return get_run_logger()
    except Exception:  # outside a flow or task run (unit tests, `.fn` calls)
        return logging.getLogger("embedlake")


def stage_row(ctx: RunContext, stage: str, status: str, **values: Any) -> pa.Table:
    row = {
        "run_id": ctx.run_id,
        "stage": stage,
        "status": status,
        "started_at": ctx.started_at,
        "source": source_text(ctx),
        "params": lake.to_json(ctx.params.model_dump()),
        "versions": lake.to_json(_versions()),
        **values,
    }
    return lake.rows_to_table([row], lake.RUNS_SCHEMA)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("embedlake", "torch", "timm", "prefect", "duckdb", "pillow", "pyarrow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def source_text(ctx: RunContext) -> str:
    # a local SOURCE whose name is not UTF-8 is stored readably (see sources.readable_path)
    return discover.readable_path(os.fsencode(str(ctx.source)))
