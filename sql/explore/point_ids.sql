-- point_ids: the image_id and a path of the group's points whose keys (first 16 hex digits of
-- image_id) are given: what a click or a box selection on the map opens.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param prefixes: VARCHAR[] -- 16 hex digits each
SELECT m.image_id, p.path
FROM map AS m
LEFT JOIN image_paths AS p USING (image_id)
WHERE m.backbone = $backbone AND m.weights_id = $weights_id AND m.precision = $precision
  AND m.image_id[1:16] IN (SELECT unnest($prefixes))
ORDER BY m.image_id;
