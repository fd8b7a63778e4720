-- part_rows: the rows of each of a group's map parts $parts, in name order (the first part of a
-- version is its fit's: the images the fit wrote; the others, the images placed since).
-- param parts: VARCHAR[] -- the paths of the parts of one map version
-- example: con.execute(sql_text("map", "part_rows.sql"), {"parts": paths}).fetchall()
SELECT filename, count(*) AS n
FROM read_parquet($parts, filename = true)
GROUP BY filename
ORDER BY filename
