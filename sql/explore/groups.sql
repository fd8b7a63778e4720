-- groups: the map's backbone groups (backbone, weights_id, precision), each with its number of
-- points and its map version; the explorer's group selector.
-- params: none
SELECT backbone, weights_id, precision, count(*) AS points, max(map_version)::VARCHAR AS map_version
FROM map
GROUP BY ALL
ORDER BY backbone, weights_id, precision;
