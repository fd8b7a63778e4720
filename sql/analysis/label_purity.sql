-- label_purity: for a metadata column, per label and backbone, how often an image's nearest
-- neighbours carry the same label (1.0 = the label forms a tight cluster).
-- param column: VARCHAR = 'label'  -- the sidecar column to read labels from
-- param k: INTEGER = 5  -- neighbours per image
-- example: embedlake query label_purity --param column=species --param k=10
WITH labels AS (
    SELECT image_id, value AS label
    FROM metadata_values($column)
    WHERE value IS NOT NULL AND value <> ''
)
SELECT n.backbone, a.label, count(DISTINCT n.image_id) AS images,
       avg((a.label = b.label)::INTEGER) AS purity
FROM neighbors AS n
JOIN labels AS a ON a.image_id = n.image_id
JOIN labels AS b ON b.image_id = n.neighbor_id
WHERE n.rank <= $k
GROUP BY ALL
ORDER BY n.backbone, purity DESC, a.label;
