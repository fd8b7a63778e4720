"""The run summary: dicts in Python, JSON text only in the `runs` row it writes."""

from __future__ import annotations

import dataclasses
import json

from embedlake.tasks import lake
from embedlake.tasks.run_context import RunSummary

# the columns stage_row fills from the run's context, not from its summary
_FROM_CONTEXT = {"run_id", "stage", "status", "started_at", "source", "params", "versions"}


def _summary(**changes) -> RunSummary:
    values = dict(
        run_id="20260101T000000Z-abcdef",
        lake="/somewhere/lake",
        status="running",
        n_files=3,
        n_files_new=3,
        n_files_changed=0,
        n_files_unchanged=0,
        n_files_gone=0,
        files_snapshot=True,
        n_ok=2,
        n_error=1,
        n_unique_images=2,
        n_embedded=2,
        n_skipped=0,
        error_counts={"truncated": 1},
        n_metadata_rows=None,
        n_metadata_without_file=None,
        n_files_without_metadata=None,
        device="cpu",
        precision="fp32",
        weights={"mobilenet_v1": "random-seed0:0123"},
        weights_random=True,
        images_per_second=None,
        stage_seconds={"discover": 0.5, "embed": 1.25},
        message=None,
    )
    return RunSummary(**{**values, **changes})


def test_the_summary_covers_every_runs_column_but_the_contexts():
    fields = {f.name for f in dataclasses.fields(RunSummary)}
    assert set(lake.RUNS_SCHEMA.names) - _FROM_CONTEXT <= fields


def test_its_row_holds_the_dicts_as_json_and_fits_the_runs_schema():
    summary = _summary()
    row = summary.row()
    assert set(row) == set(lake.RUNS_SCHEMA.names) - _FROM_CONTEXT
    assert json.loads(row["error_counts"]) == summary.error_counts == {"truncated": 1}
    assert json.loads(row["weights"]) == summary.weights
    assert json.loads(row["stage_seconds"]) == summary.stage_seconds
    table = lake.rows_to_table(
        [{"run_id": summary.run_id, "stage": "embedded", "status": "running", **row}],
        lake.RUNS_SCHEMA,
    )
    (back,) = table.to_pylist()
    assert back["error_counts"] == row["error_counts"] and back["n_error"] == 1


def test_a_finished_summary_keeps_its_dicts():
    finished = dataclasses.replace(_summary(), status="finished", seconds=2.0)
    assert finished.error_counts == {"truncated": 1} and finished.row()["seconds"] == 2.0
