-- queue_label_issues: review queue of one backbone group's label issues for a label column,
-- lowest label_quality first; each case is one image with its given, reviewed and suggested
-- labels. One case at position $pos, with the number of cases.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param column: VARCHAR -- the probed label column
-- param pos: INTEGER -- the case's position (0 = first)
SELECT [image_id] AS image_ids, label_quality AS score, given_label, reviewed_label,
       suggested_label, is_issue, count(*) OVER () AS total
FROM label_issues
WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision
  AND "column" = $column
ORDER BY label_quality, path, image_id
LIMIT 1 OFFSET $pos;
