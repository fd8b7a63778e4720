-- reviews: people's decisions about images (`embedlake review`, the explorer), as appended:
-- image_id, decision (keep | exclude | relabel | tag), value (a relabel's new label, a tag's
-- tag), label_column (the label column a relabel corrects), note, who, made_at (UTC) and run_id
-- (the lake's latest finished run when the decision was made). Never rewritten: a change of mind
-- is a newer row.
CREATE OR REPLACE VIEW reviews AS
SELECT image_id, decision, value, label_column, note, who, made_at, run_id
FROM read_parquet(lake_path('reviews/*.parquet'), union_by_name = true);

-- current_reviews: the decision in force per image and kind, the latest one winning (made_at,
-- then the later part, then the later row of a part). keep and exclude are one kind, so an
-- exclude then a keep is kept; a relabel's kind is its label_column (one label per column); a
-- tag's kind is its value (tags accumulate).
CREATE OR REPLACE VIEW current_reviews AS
WITH stored AS (
    SELECT image_id, decision, value, label_column, note, who, made_at, run_id,
        CASE decision
            WHEN 'relabel' THEN 'relabel:' || label_column
            WHEN 'tag' THEN 'tag:' || value
            ELSE 'inclusion'
        END AS kind,
        filename, file_row_number
    FROM read_parquet(
        lake_path('reviews/*.parquet'), union_by_name = true, filename = true,
        file_row_number = true
    )
)
SELECT * EXCLUDE (filename, file_row_number)
FROM stored
QUALIFY row_number() OVER (
    PARTITION BY image_id, kind ORDER BY made_at DESC, filename DESC, file_row_number DESC
) = 1;

-- reviewed_labels(column_name): per image, the label its latest relabel of that label column
-- gave it (images without one are absent).
CREATE OR REPLACE MACRO reviewed_labels(column_name) AS TABLE
SELECT image_id, value AS reviewed_label, who, made_at
FROM current_reviews
WHERE decision = 'relabel' AND label_column = column_name;
