-- points: every point of one map group, as x, y and key (the first 16 hex digits of image_id as
-- an unsigned 64-bit integer), in the explorer's one order: by key, then image_id. The server
-- keeps the keys (8 bytes a point) to place colour and filter results in that order; a row whose
-- image_id is not hex (lake data is untrusted) has no key and is left out.
-- param backbone, weights_id, precision: VARCHAR -- the group
SELECT x::FLOAT AS x, y::FLOAT AS y, key
FROM (
    SELECT x, y, image_id, TRY_CAST('0x' || image_id[1:16] AS UBIGINT) AS key
    FROM map
    WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision
      AND length(image_id) = 64
)
WHERE key IS NOT NULL
ORDER BY key, image_id;
