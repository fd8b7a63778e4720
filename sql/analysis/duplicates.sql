-- duplicates: groups of files in the current collection with byte-identical content.
-- param min_copies: INTEGER = 2  -- smallest group to list
-- example: embedlake query duplicates --param min_copies=3
SELECT image_id, count(*) AS copies, sum(size_bytes) AS bytes,
       list(path ORDER BY path) AS paths
FROM images
GROUP BY image_id
HAVING count(*) >= $min_copies
ORDER BY copies DESC, bytes DESC;
