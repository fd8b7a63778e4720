-- label_purity: for a metadata column, per label and backbone, how often an image's nearest
-- neighbours carry the same label (1.0 = the label forms a tight cluster).
-- param column: VARCHAR = 'label'  -- the sidecar column to read labels from
-- param k: INTEGER = 5  -- neighbours per image
-- param sample: INTEGER = NULL  -- only the images with the N smallest image_ids (uniform); NULL: all
-- example: embedlake query label_purity --param column=species --param k=10
-- (The images' rows of every version of their lists are read by a join on image_id and their
-- latest versions taken among them, as backbone_agreement does; labels are looked up for those
-- images and their neighbours alone. Through the `neighbors` view, joined to every image's
-- label twice, the report's purity at 10 M images spilled past 39 GB of disk and failed.)
WITH chosen AS MATERIALIZED (  -- the images scored (one pass over the collection; LIMIT NULL
    -- keeps all)
    SELECT DISTINCT image_id
    FROM images
    ORDER BY image_id
    LIMIT $sample
),
sampled AS (
    SELECT * FROM neighbor_versions WHERE image_id IN (SELECT image_id FROM chosen)
),
current AS (
    SELECT backbone, weights_id, precision, image_id, max(version) AS version
    FROM sampled
    GROUP BY ALL
),
listed AS MATERIALIZED (
    SELECT s.backbone, s.image_id, s.neighbor_id
    FROM sampled AS s
    SEMI JOIN current AS c
        ON c.backbone = s.backbone AND c.weights_id = s.weights_id
        AND c.precision = s.precision AND c.image_id = s.image_id AND c.version = s.version
    WHERE s.rank <= $k
),
labels AS MATERIALIZED (
    SELECT image_id, value AS label
    FROM metadata_values($column)
    WHERE value IS NOT NULL AND value <> ''
      AND image_id IN (SELECT image_id FROM listed UNION SELECT neighbor_id FROM listed)
)
SELECT n.backbone, a.label, count(DISTINCT n.image_id) AS images,
       avg((a.label = b.label)::INTEGER) AS purity
FROM listed AS n
JOIN labels AS a ON a.image_id = n.image_id
JOIN labels AS b ON b.image_id = n.neighbor_id
GROUP BY ALL
ORDER BY n.backbone, purity DESC, a.label;
