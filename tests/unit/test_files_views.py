"""The files a run saw, three ways that must agree: a model of random histories (kept here, in
Python), the `files` view's earlier definition (every version's end found by a per-path window,
kept here as REFERENCE), and `run_files` / `files` / `images` (each wanted run's span of events,
the latest per path winning), which the product reads because it costs a scan and a count per
path, not a window, at 10 M rows.

A history is written as runs write it: a source's first run (and a --rehash run) a snapshot of
every row, later runs the new and changed rows and the removed paths, a decode error a second
row of the same path in the same run (later recorded_at), a run killed during discovery rows
without a 'discovered' stage, a run that failed after discovery no 'finished' row."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlake.tasks.catalog import build_catalog, connect_read_only
from embedlake.tasks.schemas import (
    FILES_GONE_SCHEMA,
    FILES_SCHEMA,
    RUNS_SCHEMA,
    SCHEMA_PART,
    SCHEMAS,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# `files` as it was defined before run_files (catalog names qualified: created in `memory`)
REFERENCE = """
CREATE OR REPLACE VIEW file_versions AS
WITH versions AS (
    SELECT f.*, d.source, d.started_at AS seen_at
    FROM read_parquet(catalog.lake_path('files/*.parquet'), union_by_name = true) AS f
    JOIN catalog.discoveries AS d USING (run_id)
),
timeline AS (
    SELECT source, path, seen_at AS event_at, recorded_at, run_id AS version_of FROM versions
    UNION ALL
    SELECT d.source, g.path, d.started_at, NULL, NULL
    FROM read_parquet(catalog.lake_path('files_gone/*.parquet'), union_by_name = true) AS g
    JOIN catalog.discoveries AS d USING (run_id)
),
ends AS (
    SELECT source, path, version_of, recorded_at,
        lead(event_at) OVER (
            PARTITION BY source, path ORDER BY event_at, recorded_at NULLS FIRST
        ) AS next_at
    FROM timeline
),
snapshots AS (SELECT source, started_at FROM catalog.discoveries WHERE snapshot)
SELECT v.*, CASE
        WHEN e.next_at IS NULL THEN s.started_at
        WHEN s.started_at IS NULL THEN e.next_at
        ELSE least(e.next_at, s.started_at)
    END AS valid_until
FROM versions AS v
JOIN ends AS e
    ON e.version_of = v.run_id AND e.path = v.path
    AND e.source IS NOT DISTINCT FROM v.source
    AND e.recorded_at IS NOT DISTINCT FROM v.recorded_at
ASOF LEFT JOIN snapshots AS s ON s.source = v.source AND s.started_at > v.seen_at;

CREATE OR REPLACE VIEW reference_files AS
SELECT r.run_id, v.* EXCLUDE (run_id, source, seen_at, valid_until), v.run_id AS recorded_by
FROM catalog.discoveries AS r
JOIN memory.file_versions AS v
    ON v.source IS NOT DISTINCT FROM r.source
    AND v.seen_at <= r.started_at
    AND (v.valid_until IS NULL OR r.started_at < v.valid_until)
UNION ALL BY NAME
SELECT f.*, f.run_id AS recorded_by
FROM read_parquet(catalog.lake_path('files/*.parquet'), union_by_name = true) AS f
WHERE f.run_id NOT IN (SELECT run_id FROM catalog.discoveries);
"""
COLUMNS = ["path", "image_id", "status", "error_code", "recorded_at"]


def _part(lake, table: str, name: str, rows: list[dict], schema: pa.Schema) -> None:
    if rows:
        data = pa.Table.from_pylist(rows).cast(pa.schema([schema.field(c) for c in rows[0]]))
        pq.write_table(data, lake / table / name)


def write_history(lake, seed: int) -> dict[str, dict[str, dict]]:
    """A random history of two sources; the model: each discovered run's files, by path."""
    rng = random.Random(seed)
    for table, schema in SCHEMAS.items():
        (lake / table).mkdir(parents=True)
        pq.write_table(schema.empty_table(), lake / table / SCHEMA_PART)
    state: dict[str, dict[str, dict]] = {"/a": {}, "/b": {}}
    seen: dict[str, dict[str, dict]] = {}
    serial = 0
    for n in range(rng.randint(5, 10)):
        source = rng.choice(sorted(state))
        run_id = f"2026010{n}T000000Z-{n:06x}"
        started = T0 + timedelta(minutes=n)
        recorded = started + timedelta(seconds=1)
        outcome = rng.choice(["finished"] * 4 + ["killed", "failed"])
        rehash = rng.random() < 0.3
        before = state[source]
        after = {} if outcome == "killed" else dict(before)
        snapshot = rehash or not before
        written, gone = [], []
        for path in sorted(before):
            if rng.random() < 0.2 and outcome != "killed":
                del after[path]
                if not snapshot:
                    gone.append({"run_id": run_id, "path": path})
        for _ in range(rng.randint(0, 4)):
            path = f"img_{rng.randint(0, 12):02d}.jpg"
            serial += 1
            row = {
                "path": path,
                "image_id": f"{serial:016x}{0:048x}",
                "status": "ok",
                "error_code": None,
            }
            after[path] = row
        for path, row in sorted(after.items()):
            if snapshot or before.get(path) is not row:
                written.append({"run_id": run_id, **row, "recorded_at": recorded})
        if outcome == "killed":  # part of its inventory only, and no 'discovered' row
            written = written[: len(written) // 2]
        _part(lake, "files", f"{run_id}-000000.parquet", written, FILES_SCHEMA)
        _part(lake, "files_gone", f"{run_id}.parquet", gone, FILES_GONE_SCHEMA)
        failed = []
        for path in sorted(after):
            if outcome != "killed" and rng.random() < 0.15:  # its pixels fail to decode
                row = {**after[path], "status": "error", "error_code": "decode"}
                after[path] = row
                failed.append({"run_id": run_id, **row, "recorded_at": recorded + timedelta(1)})
        _part(lake, "files", f"{run_id}-decode-errors.parquet", failed, FILES_SCHEMA)
        stages = {"killed": ["started"], "failed": ["started", "discovered", "failed"]}
        for k, stage in enumerate(stages.get(outcome, ["started", "discovered", "finished"])):
            row = {
                "run_id": run_id,
                "stage": stage,
                "started_at": started,
                "status": "running" if stage in ("started", "discovered") else stage,
                "source": source,
                "files_snapshot": snapshot if stage == "discovered" else None,
            }
            _part(lake, "runs", f"{run_id}-{k}-{stage}.parquet", [row], RUNS_SCHEMA)
        if outcome != "killed":
            state[source] = after
            seen[run_id] = {"source": source, "finished": outcome == "finished", "files": after}
    build_catalog(lake)
    return seen


def _rows(con, sql: str, params: dict | None = None) -> list[tuple]:
    cols = ", ".join(["run_id", *COLUMNS, "recorded_by"])
    return sorted(con.execute(f"SELECT {cols} FROM ({sql})", params or {}).fetchall())


@pytest.mark.parametrize("seed", range(6))
def test_run_files_and_images_agree_with_the_files_view_and_the_model(tmp_path, seed):
    lake = tmp_path / "lake"
    seen = write_history(lake, seed)
    with connect_read_only(lake) as con:
        con.execute("USE memory")
        con.execute(REFERENCE)
        con.execute("USE catalog")
        reference = _rows(con, "SELECT * FROM memory.reference_files")
        assert _rows(con, "SELECT * FROM files") == reference
        for run_id, run in seen.items():
            model = sorted((run_id, p, r["image_id"], r["status"]) for p, r in run["files"].items())
            fast = _rows(con, "SELECT * FROM run_files([$r])", {"r": run_id})
            assert fast == _rows(con, "SELECT * FROM files WHERE run_id = $r", {"r": run_id})
            assert [(r[0], r[1], r[2], r[3]) for r in fast] == model
        current = []
        for source in ("/a", "/b"):
            finished = [r for r, run in seen.items() if run["source"] == source and run["finished"]]
            if finished:
                latest = max(finished)  # run_ids sort as their starts here
                current += [
                    (latest, p, r["image_id"])
                    for p, r in seen[latest]["files"].items()
                    if r["status"] == "ok"
                ]
        images = _rows(con, "SELECT * FROM images")
        assert [r[:3] for r in images] == sorted(current)
        old_rule = """
            SELECT f.* FROM memory.reference_files AS f
            JOIN (
                SELECT run_id FROM runs WHERE status = 'finished'
                QUALIFY row_number() OVER (PARTITION BY source ORDER BY started_at DESC) = 1
            ) USING (run_id)
            WHERE f.status = 'ok'"""
        assert images == _rows(con, old_rule)
        assert (
            con.sql("SELECT * FROM images LIMIT 0").columns
            == con.sql("SELECT * FROM files LIMIT 0").columns
        )


def _map_row(n: int, version: int, x: float, run_id: str) -> dict:
    return {
        "image_id": f"{n:064x}",
        **dict(zip(("backbone", "weights_id", "precision"), GROUP, strict=True)),
        "x": x,
        "y": -x,
        "map_version": version,
        "placed": "neighbors",
        "run_id": run_id,
    }


GROUP = ("mobilenet_v1", "w:0", "fp32")


def test_the_map_holds_each_current_image_once_at_its_latest_place(tmp_path):
    """The latest map version only; an image placed twice in it (a killed run's part, then its
    rerun's) at the later part's place; an image no longer current not at all. The explorer's
    points (keys, without the view) say the same."""
    from embedlake.tasks.explore import Explorer, Group
    from embedlake.tasks.schemas import MAP_SCHEMA

    lake = tmp_path / "lake"
    seen = write_history(lake, 0)
    finished = [r for r, run in seen.items() if run["finished"]]
    current = {
        int(row["image_id"], 16)
        for r in finished
        for row in seen[r]["files"].values()
        if row["status"] == "ok"
        and r == max(x for x in finished if seen[x]["source"] == seen[r]["source"])
    }
    gone = {
        int(r["image_id"], 16) for run in seen.values() for r in run["files"].values()
    } - current
    assert current and gone
    everyone = sorted(current | gone)
    old = [_map_row(n, 1, 100.0, "r0") for n in everyone]
    first = [_map_row(n, 2, 1.0, "r1") for n in everyone]
    again = [_map_row(n, 2, 2.0, "r2") for n in everyone[::2]]  # placed again, later
    for name, rows in (("g-00000001-r0", old), ("g-00000002-r1", first), ("g-00000002-r2", again)):
        _part(lake, "map", f"{name}.parquet", rows, MAP_SCHEMA)
    expected = {n: (2.0 if i % 2 == 0 else 1.0) for i, n in enumerate(everyone) if n in current}
    with connect_read_only(lake) as con:
        rows = con.execute("SELECT image_id, x, map_version FROM map").fetchall()
    assert {int(i, 16): x for i, x, _ in rows} == expected
    assert len(rows) == len(expected) and {v for *_, v in rows} == {2}
    explorer = Explorer(lake)
    try:
        keys, xy = explorer.points(Group(*GROUP))
    finally:
        explorer.close()
    assert keys.tolist() == sorted(n >> 192 for n in expected)  # the ids' first 16 hex digits
    assert xy[:, 0].tolist() == [expected[n] for n in sorted(expected)]


def test_errors_summary_of_a_run_killed_during_discovery_shows_what_it_wrote(tmp_path):
    from embedlake.tasks.queries import run_query

    lake = tmp_path / "lake"
    for table, schema in SCHEMAS.items():
        (lake / table).mkdir(parents=True)
        pq.write_table(schema.empty_table(), lake / table / SCHEMA_PART)
    for n, stages in ((0, ["started", "discovered", "finished"]), (1, ["started"])):
        run_id = f"2026010{n}T000000Z-{n:06x}"
        rows = [
            {"run_id": run_id, "path": f"{c}.jpg", "status": "error", "error_code": "decode"}
            for c in "ab"[: n + 1]
        ] + [{"run_id": run_id, "path": "c.jpg", "status": "ok", "error_code": None}]
        _part(lake, "files", f"{run_id}-000000.parquet", rows, FILES_SCHEMA)
        for k, stage in enumerate(stages):
            row = {
                "run_id": run_id,
                "stage": stage,
                "started_at": T0 + timedelta(minutes=n),
                "status": "running" if stage in ("started", "discovered") else stage,
                "source": "/a",
                "files_snapshot": True if stage == "discovered" else None,
            }
            _part(lake, "runs", f"{run_id}-{k}-{stage}.parquet", [row], RUNS_SCHEMA)
    build_catalog(lake)
    with connect_read_only(lake) as con:
        killed = run_query(con, "errors_summary", {}).to_pylist()  # the latest run: the killed one
        finished = run_query(con, "errors_summary", {"run_id": "20260100T000000Z-000000"})
    assert [(r["error_code"], r["files"], r["example_paths"]) for r in killed] == [
        ("decode", 2, ["a.jpg", "b.jpg"])
    ]
    assert finished.to_pylist()[0]["files"] == 1


@pytest.mark.parametrize("seed", range(4))
def test_the_reports_changes_between_two_runs_follow_the_model(tmp_path, seed):
    from embedlake.tasks.report import _report_rows

    lake = tmp_path / "lake"
    seen = write_history(lake, seed)
    runs = sorted(seen)  # run_ids sort as their starts here
    with connect_read_only(lake) as con:
        for previous, run in zip(runs, runs[1:], strict=False):
            ok = {
                r: {f["image_id"] for f in seen[r]["files"].values() if f["status"] == "ok"}
                for r in (previous, run)
            }
            changes = _report_rows(con, "image_changes", run_id=run, previous_id=previous)
            assert {r["change"]: r["images"] for r in changes.to_pylist()} == {
                "added": len(ok[run] - ok[previous]),
                "removed": len(ok[previous] - ok[run]),
                "kept": len(ok[run] & ok[previous]),
            }
