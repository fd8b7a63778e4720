-- cosine similarity of two stored embeddings (both are unit vectors, so this is a dot product).
CREATE OR REPLACE MACRO cosine(a, b) AS list_cosine_similarity(a, b);

-- nearest(image_id, backbone, k): the k images whose embeddings are most like this one's,
-- under the same backbone, weights and precision. Exact (a scan); see `neighbors` for the graph.
-- Scans the stored rows directly (embedding_rows): similarity first, then one row per image,
-- which is cheaper than deduplicating whole vectors through the `embeddings` view.
CREATE OR REPLACE MACRO nearest(query_id, query_backbone, k := 10) AS TABLE
WITH query AS (
    SELECT embedding, weights_id, precision
    FROM embedding_rows
    WHERE image_id = query_id AND backbone = query_backbone
    ORDER BY created_at DESC
    LIMIT 1
)
SELECT e.image_id, max(list_cosine_similarity(e.embedding, q.embedding)) AS similarity
FROM embedding_rows AS e, query AS q
WHERE e.backbone = query_backbone
  AND e.weights_id = q.weights_id
  AND e.precision = q.precision
  AND e.image_id <> query_id
GROUP BY e.image_id
ORDER BY similarity DESC
LIMIT k;

-- metadata_values(column_name): the sidecar's value of one column per image_id, as text.
-- Lets queries take the column as a bound parameter (a column name cannot be one).
CREATE OR REPLACE MACRO metadata_values(column_name) AS TABLE
WITH long AS (
    UNPIVOT (
        -- every column but image_id (path included, so a sidecar of keys alone still unpivots)
        SELECT image_id, COLUMNS(* EXCLUDE (image_id))::VARCHAR FROM metadata
    )
    ON COLUMNS(* EXCLUDE (image_id)) INTO NAME field VALUE value
)
SELECT image_id, any_value(value) AS value
FROM long
WHERE field = column_name AND image_id IS NOT NULL
GROUP BY image_id;

-- close_neighbors(threshold): the rows of the current lists (the `neighbors` view's) whose
-- similarity is at least `threshold`. The lists that hold such a row are found from their
-- scores (`list_score_versions`' max_similarity, a row a list), and of those the lists that are
-- their image's latest; at a threshold of close_floor() or more their rows are the `close` kept
-- with the scores, below it they are read from the graph's rows (every part's image ids, as
-- near-duplicate rows lie in every row group: the report's near_duplicates at 1 M images took
-- 5.3 s so, 2.0 s from `close`; bench/report_graph.py), never through the view's window.
CREATE OR REPLACE MACRO close_neighbors(threshold) AS TABLE
WITH lists AS MATERIALIZED (  -- of any version
    SELECT * FROM list_score_versions WHERE max_similarity >= threshold
),
current_lists AS MATERIALIZED (  -- those that are their image's latest list
    SELECT l.*
    FROM lists AS l
    SEMI JOIN (
        SELECT backbone, weights_id, precision, image_id, max(version) AS version
        FROM list_score_versions
        WHERE image_id IN (SELECT image_id FROM lists)
        GROUP BY ALL
    ) AS latest
        ON latest.backbone = l.backbone AND latest.weights_id = l.weights_id
        AND latest.precision = l.precision AND latest.image_id = l.image_id
        AND latest.version = l.version
),
kept AS (
    SELECT backbone, weights_id, precision, image_id, unnest(close) AS row, method
    FROM current_lists
    WHERE threshold >= close_floor()
)
SELECT backbone, weights_id, precision, image_id, row.neighbor_id, row.rank, row.similarity,
    method
FROM kept
WHERE row.similarity >= threshold
UNION ALL
SELECT n.backbone, n.weights_id, n.precision, n.image_id, n.neighbor_id, n.rank, n.similarity,
    n.method
FROM neighbor_versions AS n
SEMI JOIN current_lists AS c
    ON c.backbone = n.backbone AND c.weights_id = n.weights_id AND c.precision = n.precision
    AND c.image_id = n.image_id AND c.version = n.version
WHERE n.similarity >= threshold AND threshold < close_floor();

-- group_pairs(backbone, weights_id, precision, threshold): the pairs of different images of one
-- backbone group whose graph similarity is at least `threshold`, each pair once as (a, b), a < b:
-- the explorer's near-duplicate and leaky-split queues and its duplicate colouring.
CREATE OR REPLACE MACRO group_pairs(group_backbone, group_weights_id, group_precision, threshold)
AS TABLE
SELECT least(image_id, neighbor_id) AS a, greatest(image_id, neighbor_id) AS b,
       max(similarity) AS similarity
FROM close_neighbors(threshold)
WHERE backbone = group_backbone AND weights_id = group_weights_id
  AND precision = group_precision
GROUP BY ALL;

-- near_duplicate_pairs(threshold, backbone): pairs of different images whose graph similarity is
-- at least `threshold` (one backbone, or every backbone when NULL), each pair once.
CREATE OR REPLACE MACRO near_duplicate_pairs(threshold, backbone_name) AS TABLE
SELECT backbone, least(image_id, neighbor_id) AS image_id_a,
       greatest(image_id, neighbor_id) AS image_id_b, max(similarity) AS similarity
FROM close_neighbors(threshold)
WHERE backbone_name IS NULL OR backbone = backbone_name
GROUP BY ALL;
