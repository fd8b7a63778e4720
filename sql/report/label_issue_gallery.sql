-- The images confident learning flags in one column under one backbone, lowest label_quality
-- first, each with its graph neighbours (nearest first), their paths and given labels.
WITH issues AS (
    SELECT image_id, path, given_label, suggested_label, label_quality, weights_id, precision
    FROM label_issues
    WHERE "column" = $column AND backbone = $backbone AND is_issue
    ORDER BY label_quality, path
    LIMIT $limit
)
SELECT i.image_id, i.path, i.given_label, i.suggested_label, i.label_quality,
       list(struct_pack(path := l.path, label := l.given_label, similarity := n.similarity)
            ORDER BY n.rank) FILTER (WHERE l.path IS NOT NULL) AS neighbours
FROM issues AS i
LEFT JOIN neighbors AS n
    ON n.image_id = i.image_id AND n.backbone = $backbone
    AND n.weights_id = i.weights_id AND n.precision = i.precision
LEFT JOIN label_issues AS l
    ON l.image_id = n.neighbor_id AND l.backbone = $backbone AND l."column" = $column
    AND l.weights_id = i.weights_id AND l.precision = i.precision
GROUP BY ALL
ORDER BY i.label_quality, i.path;
