-- files: one row per discovered file per run, 'ok' or 'error' with an error_code.
-- Discovery writes its rows as it goes; an image whose pixels then failed to decode while being
-- embedded is recorded in decode_errors, and shown here as the error it turned out to be.
CREATE OR REPLACE VIEW files AS
SELECT f.* REPLACE (
    CASE WHEN d.error_code IS NULL THEN f.status ELSE 'error' END AS status,
    coalesce(d.error_code, f.error_code) AS error_code,
    coalesce(d.error_message, f.error_message) AS error_message
)
FROM read_parquet('@LAKE@/files/*.parquet', union_by_name = true) AS f
LEFT JOIN (
    SELECT run_id, image_id, any_value(error_code) AS error_code,
        any_value(error_message) AS error_message
    FROM read_parquet('@LAKE@/decode_errors/*.parquet', union_by_name = true)
    GROUP BY run_id, image_id
) AS d ON f.status = 'ok' AND f.run_id = d.run_id AND f.image_id = d.image_id;

-- images: the current collection of each SOURCE: the files of its latest finished run that are
-- 'ok'. A file deleted from SOURCE drops out; sources that share a lake stay apart.
CREATE OR REPLACE VIEW images AS
SELECT f.*
FROM files AS f
JOIN (
    SELECT run_id
    FROM runs
    WHERE status = 'finished'
    QUALIFY row_number() OVER (PARTITION BY source ORDER BY started_at DESC) = 1
) USING (run_id)
WHERE f.status = 'ok';
