-- current_images: the image_ids of the collection as it stands once run $run_id finishes: per
-- SOURCE, the 'ok' files of that run (for its own source) or of the source's latest finished run
-- (the `images` view's rule). $run_id NULL (reindex): exactly the ids of `images`.
-- param run_id: VARCHAR = NULL -- the run being made (its files rows are written, it is not
-- finished yet)
-- example: con.execute(sql_text("map", "current_images.sql"), {"run_id": ctx.run_id})
SELECT DISTINCT f.image_id
FROM run_files((
    SELECT list(run_id)
    FROM (
        SELECT run_id
        FROM runs
        WHERE status = 'finished' OR run_id = $run_id
        QUALIFY row_number() OVER (
            PARTITION BY source ORDER BY (run_id = $run_id) IS TRUE DESC, started_at DESC
        ) = 1
    )
)) AS f
WHERE f.status = 'ok' AND f.image_id IS NOT NULL
