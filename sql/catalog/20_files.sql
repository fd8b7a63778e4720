-- How `files` is stored: a run writes versions only, the rows of files that are new or changed
-- since its source's previous run (every row on a source's first run, or with --rehash: a
-- snapshot), and `files_gone` lists the paths that disappeared. An unchanged collection adds a
-- few bytes per run. Lakes written before 0.2 hold one full part per run: each is a snapshot.

-- discoveries: runs whose discovery completed, with their source and start (runs are ordered by it)
CREATE OR REPLACE VIEW discoveries AS
WITH stages AS (
    SELECT run_id, stage, source, started_at, files_snapshot
    FROM read_parquet(lake_path('runs/*.parquet'), union_by_name = true)
),
legacy AS (  -- a 0.1 lake's parts are named by their run: listed, not read
    SELECT regexp_extract(file, '(\d{8}T\d{6}Z-[0-9a-f]{6})\.parquet$', 1) AS run_id
    FROM glob(lake_path('files/*.parquet'))
    WHERE regexp_matches(file, '\d{8}T\d{6}Z-[0-9a-f]{6}\.parquet$')
)
SELECT run_id, any_value(source) AS source, min(started_at) AS started_at,
    bool_or(coalesce(files_snapshot, false) OR run_id IN (SELECT run_id FROM legacy)) AS snapshot
FROM stages
WHERE stage = 'discovered' OR run_id IN (SELECT run_id FROM legacy)
GROUP BY run_id;

-- run_files(run_ids): the `files` rows of the given runs (a list of run_ids whose discovery
-- completed), as the `files` view shows them, but without expanding every version of every run:
-- a run's files are the events (versions and removals) of its source from its latest snapshot up
-- to its start, the latest event per path winning. Most paths have one event in that span; only
-- those with more are ranked, so the cost is a scan of the parts plus a count per path (the
-- `files` view's per-path window costs ~7x that at 10 M rows). The current collection
-- (`images`), a run's inventory and its report read files through this.
CREATE OR REPLACE MACRO run_files(run_ids) AS TABLE
WITH span AS (
    SELECT r.run_id, r.source, r.started_at AS until,
        (SELECT max(s.started_at) FROM discoveries AS s
         WHERE s.snapshot AND s.source IS NOT DISTINCT FROM r.source
           AND s.started_at <= r.started_at) AS since
    FROM discoveries AS r
    WHERE list_contains(run_ids, r.run_id)
),
members AS (  -- the runs whose rows and removals make up each wanted run's files
    SELECT s.run_id AS of_run, d.run_id, d.started_at
    FROM span AS s
    JOIN discoveries AS d
        ON s.source IS NOT DISTINCT FROM d.source AND d.started_at <= s.until
        AND (s.since IS NULL OR d.started_at >= s.since)
),
versions AS NOT MATERIALIZED (
    SELECT m.of_run, f.*,
        struct_pack(at := m.started_at, kind := 1,
            recorded := coalesce(f.recorded_at, '-infinity'::TIMESTAMPTZ)) AS event
    FROM read_parquet(lake_path('files/*.parquet'), union_by_name = true) AS f
    JOIN members AS m USING (run_id)
),
gone AS NOT MATERIALIZED (
    SELECT m.of_run, g.path,
        struct_pack(at := m.started_at, kind := 0, recorded := '-infinity'::TIMESTAMPTZ) AS event
    FROM read_parquet(lake_path('files_gone/*.parquet'), union_by_name = true) AS g
    JOIN members AS m USING (run_id)
),
events AS NOT MATERIALIZED (
    SELECT of_run, path, event FROM versions UNION ALL SELECT of_run, path, event FROM gone
),
contested AS (  -- paths with more than one event in the span, by a hash (a collision only
    -- sends a path to be ranked): counted first, which is cheap
    SELECT hash(of_run, path) AS h FROM events GROUP BY h HAVING count(*) > 1
),
latest AS (  -- and their latest event, which wins
    SELECT of_run, path, max(event) AS event
    FROM events
    WHERE hash(of_run, path) IN (SELECT h FROM contested)
    GROUP BY of_run, path
)
SELECT v.of_run AS run_id, v.* EXCLUDE (of_run, run_id, event), v.run_id AS recorded_by
FROM versions AS v
WHERE hash(v.of_run, v.path) NOT IN (SELECT h FROM contested)
UNION ALL
SELECT v.of_run AS run_id, v.* EXCLUDE (of_run, run_id, event), v.run_id AS recorded_by
FROM versions AS v
SEMI JOIN latest AS l ON l.of_run = v.of_run AND l.path = v.path AND l.event = v.event;

-- files: one row per discovered file per run, 'ok' or 'error' with an error_code: each
-- discovery-complete run with the versions true at its start (recorded_by: the run that wrote
-- the row), through run_files; a run killed during discovery shows the rows it had written.
-- (Earlier, a per-path window over every version computed when each stopped being true:
-- 33.7 s for a count of 10 M rows here, against 4.8 s; tests/unit/test_files_views.py keeps
-- that definition as the reference both are checked against.)
CREATE OR REPLACE VIEW files AS
SELECT * FROM run_files((SELECT list(run_id) FROM discoveries))
UNION ALL BY NAME
SELECT f.*, f.run_id AS recorded_by
FROM read_parquet(lake_path('files/*.parquet'), union_by_name = true) AS f
WHERE f.run_id NOT IN (SELECT run_id FROM discoveries);

-- images: the current collection of each SOURCE: the files of its latest finished run that are
-- 'ok'. A file deleted from SOURCE drops out; sources that share a lake stay apart.
CREATE OR REPLACE VIEW images AS
SELECT *
FROM run_files((
    SELECT list(run_id)
    FROM (
        SELECT run_id
        FROM runs
        WHERE status = 'finished'
        QUALIFY row_number() OVER (PARTITION BY source ORDER BY started_at DESC) = 1
    )
))
WHERE status = 'ok';
