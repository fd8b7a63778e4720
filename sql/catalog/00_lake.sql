-- lake_path(name): where `name` (e.g. 'embeddings/*.parquet') lies in the lake, as this
-- connection reaches it. The catalog holds no location of its own: embedlake sets the variable
-- `embedlake_lake` on every connection it opens (a read connection's is the lake behind a
-- filesystem that only reads), so a lake that is moved, copied or mounted read-only still
-- answers. Another DuckDB client falls back to where the lake was when the catalog was built,
-- or sets the variable: SET VARIABLE embedlake_lake = '/new/place/lake';
-- @LAKE@ and @VERSION@ are string literals catalog._fill writes in (a macro binds no parameters).
CREATE OR REPLACE MACRO lake_path(name) AS
    coalesce(getvariable('embedlake_lake'), @LAKE@) || '/' || name;

-- embedlake_catalog_version(): a digest of the catalog SQL this file was built from; a reader
-- that finds another one (an older embedlake's catalog) builds the views afresh in memory.
CREATE OR REPLACE MACRO embedlake_catalog_version() AS @VERSION@;
