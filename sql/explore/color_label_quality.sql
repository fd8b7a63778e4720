-- color_label_quality: the group's label quality of a label column per image (0..1, low =
-- probably wrong; cleanlab's score on the probe's out-of-fold probabilities). Numeric.
-- param backbone, weights_id, precision: VARCHAR -- the group
-- param column: VARCHAR -- the probed label column
SELECT TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key, label_quality::DOUBLE AS value
FROM label_issues
WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision
  AND "column" = $column;
