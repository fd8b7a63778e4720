-- duplicates: groups of files in the current collection with byte-identical content.
-- param min_copies: INTEGER = 2  -- smallest group to list
-- example: embedlake query duplicates --param min_copies=3
WITH copied AS (  -- counted first: paths are gathered for the copied images alone
    SELECT image_id, count(*) AS copies, sum(size_bytes) AS bytes
    FROM images
    GROUP BY image_id
    HAVING count(*) >= $min_copies
)
SELECT c.image_id, c.copies, c.bytes, list(i.path ORDER BY i.path) AS paths
FROM copied AS c
JOIN images AS i USING (image_id)
GROUP BY c.image_id, c.copies, c.bytes
ORDER BY copies DESC, bytes DESC, image_id;
