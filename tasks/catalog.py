"""The DuckDB catalog: views and macros over the lake's Parquet, and read-only connections to it.

`catalog.duckdb` holds no data. It is built from `sql/catalog/*.sql` (in name order) into a new
file that is then renamed over the old one, so a reader never sees a half-built catalog and never
waits on the writer. It can be rebuilt from the Parquet alone at any time (`build_catalog`).

The catalog names no location: its views read `lake_path('table/*.parquet')`, which follows the
variable `embedlake_lake` that every connection opened here sets (sql/catalog/00_lake.sql). A lake
moved, copied or mounted read-only answers as it is; a catalog built by another embedlake
version is replaced, for that connection, by the same views built in memory.

Read connections are locked down twice. Only statements that read are admitted, by what DuckDB
parses them to be (`check_read_only`: SELECT, and EXPLAIN [ANALYZE] of a SELECT, since EXPLAIN
ANALYZE runs what it wraps). And the connection has nothing to write through if a statement got
by: it reaches the lake only through a filesystem that opens files for reading
(tasks.read_only_fs), `allowed_directories` is that filesystem's view of the lake (the local
filesystem is out of reach), external access, persistent secrets and extension loading are off
and the configuration is frozen. DuckDB's read-only mode alone covers only the database file.

A lake on shared storage (an fsspec URL) keeps its catalog in the local cache folder (DuckDB keeps
no database file on an object store); its views read the URL's globs through the fsspec
filesystem, registered with every connection (no httpfs extension needed). A missing cached
catalog is rebuilt on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import re
import shutil
import stat
import tempfile
from importlib import resources
from pathlib import Path

import duckdb

from .lake import SCHEMA_PART, Lake

__all__ = [
    "CATALOG_NAME",
    "RefusedStatement",
    "build_catalog",
    "check_read_only",
    "connect_read_only",
    "latest_metadata_part",
    "run_checks",
    "sql_text",
]

CATALOG_NAME = "catalog.duckdb"
_LAKE_VARIABLE = "embedlake_lake"  # read by lake_path() in sql/catalog/00_lake.sql
_EXPLAIN_OPTIONS = {"ANALYZE", "ANALYSE"}  # EXPLAIN's keywords before the statement it wraps


class RefusedStatement(ValueError):
    """A statement that would do more than read."""


def sql_text(*parts: str) -> str:
    """The text of a file under the package's sql/ folder, e.g. sql_text('catalog', 'x.sql')."""
    return resources.files("embedlake.sql").joinpath(*parts).read_text()


def _sql_files(folder: str) -> list[str]:
    return sorted(
        entry.name
        for entry in resources.files("embedlake.sql").joinpath(folder).iterdir()
        if entry.name.endswith(".sql")
    )


# DuckDB binds no parameters in CREATE VIEW or CREATE MACRO, so the few values the catalog's DDL
# needs are written into it: each through _literal, _identifier or int, by _fill alone
_MARKER = re.compile(r"@([A-Z_]+)@")


def _literal(text: str) -> str:
    """`text` as one SQL string literal (DuckDB's are standard: a quote is doubled, a backslash
    is itself)."""
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    """`name` as one quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _fill(text: str, **values: str) -> str:
    """`text` with each @NAME@ marker replaced by values[NAME], SQL already quoted, in one pass
    (a value that holds a marker stays as it is). A marker without a value is an error."""
    if missing := set(_MARKER.findall(text)) - set(values):
        raise ValueError(f"no value for the SQL marker(s) {', '.join(sorted(missing))}")
    return _MARKER.sub(lambda found: values[found.group(1)], text)


def latest_metadata_part(root: str | Path | Lake) -> str:
    """The name of the newest run's sidecar part (the schema part when there is none)."""
    root = Lake.at(root)
    parts = [name for name in root.part_names("metadata") if name != SCHEMA_PART]
    return parts[-1] if parts else SCHEMA_PART


def build_catalog(root: str | Path | Lake, create: bool = True) -> Path:
    """(Re)build the lake's catalog.duckdb from the Parquet parts; atomic for readers.

    `create=False` (a reader rebuilding a URL lake's cached catalog) writes nothing to the lake:
    it reads the lake as readers do, tables an older embedlake did not write shown empty
    (`Lake.schema_stand_ins`) rather than written on the reader's behalf.
    """
    root = Lake.at(root)
    if create:
        root.ensure()
    target = root.catalog_file
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(tmp)) as con:
            _create_views(con, root, root.register(con, read_only=not create))
            con.execute("CHECKPOINT")
        os.replace(tmp, target)
        if root.catalog_is_cache:
            _version_file(target).write_text(_catalog_version())
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return target


def _create_views(con: duckdb.DuckDBPyConnection, root: Lake, location: str) -> None:
    """The catalog's views and macros in `con`, reading the lake at `location`."""
    _use_location(con, location)
    values = {
        "LAKE": _literal(root.location()),  # lake_path()'s fallback for other DuckDB clients
        "METADATA_PART": _literal(latest_metadata_part(root)),
        "VERSION": _literal(_catalog_version()),
    }
    for name in _sql_files("catalog"):
        con.execute(_fill(sql_text("catalog", name), **values))
    _create_backbone_views(con)


def _use_location(con: duckdb.DuckDBPyConnection, location: str) -> None:
    con.execute(f"SET VARIABLE {_LAKE_VARIABLE} = $location", {"location": location})


def _create_backbone_views(con: duckdb.DuckDBPyConnection) -> None:
    """`embeddings_<backbone>` per backbone the lake holds: `embedding` as FLOAT[dim]."""
    template = sql_text("catalog_templates", "backbone_embeddings.sql")
    groups = con.execute("SELECT DISTINCT backbone, dim FROM embeddings ORDER BY ALL").fetchall()
    dims: dict[str, set[int]] = {}
    for backbone, dim in groups:
        dims.setdefault(backbone, set()).add(dim)
    for backbone, found in dims.items():
        if len(found) != 1:  # consistent_dims reports it; a fixed size cannot hold both
            continue
        view = "embeddings_" + re.sub(r"[^0-9a-z]+", "_", backbone.lower()).strip("_")
        dim = str(int(found.pop()))
        con.execute(_fill(template, VIEW=_identifier(view), BACKBONE=_literal(backbone), DIM=dim))


def _catalog_version() -> str:
    """A digest of sql/catalog/: a cached catalog built by another embedlake version is stale."""
    digest = hashlib.sha256()
    for folder in ("catalog", "catalog_templates"):
        for name in _sql_files(folder):
            digest.update(name.encode() + b"\0" + sql_text(folder, name).encode())
    return digest.hexdigest()


def _version_file(catalog: Path) -> Path:
    return catalog.with_name(catalog.name + ".version")


def _is_current(catalog: Path) -> bool:
    version = _version_file(catalog)
    return version.is_file() and version.read_text() == _catalog_version()


def connect_read_only(
    root: str | Path | Lake, memory_limit: str = "1GB"
) -> duckdb.DuckDBPyConnection:
    """A connection to the catalog that can read the lake and nothing else.

    `memory_limit`: DuckDB's, past which it spills (to a private folder). 1GB by default: a run
    asks its lake questions in the process that holds the models, and on the 1 M-image lake the
    report took 40 s either way but 4.5 GB of RSS at 4GB against 1.5 GB at 1GB
    (bench/measured/scale-run-1000000.json; `sql` and `serve` take --memory-limit)."""
    root = Lake.at(root)
    catalog = root.catalog_file
    stale = root.catalog_is_cache and catalog.is_file() and not _is_current(catalog)
    if stale or not catalog.is_file():
        first = f"run `embedlake run SOURCE --lake {root}` first"
        if not root.catalog_is_cache:
            raise FileNotFoundError(f"no catalog at {catalog}: {first}")
        if not root.exists():
            raise FileNotFoundError(f"no lake at {root}: {first}")
        build_catalog(root, create=False)  # a URL lake's catalog: a local cache of the Parquet
    # DuckDB spills big sorts and joins beside the database file by default, which for a local
    # lake is inside it: a reader must write nothing there, so spills go to a private folder.
    # Each read connection is a DuckDB instance of its own (in memory, the catalog attached
    # read-only): its filesystem and frozen settings are its alone, and several can be open.
    config = {
        "memory_limit": memory_limit,
        "temp_directory": str(_spill_folder()),
        "allocator_flush_threshold": "16MB",
        "allocator_bulk_deallocation_flush_threshold": "16MB",
    }
    con = duckdb.connect(":memory:", config=config)
    location = root.register(con, read_only=True)
    _use_location(con, location)
    con.execute("ATTACH $catalog AS catalog (READ_ONLY)", {"catalog": str(catalog)})
    con.execute("USE catalog")
    if not _built_here(con):  # an older embedlake's catalog: its views name absolute paths
        con.execute("USE memory")
        con.execute("DETACH catalog")
        _create_views(con, root, location)
    con.execute("SET allowed_directories = [$dir]", {"dir": location + "/"})
    con.execute("SET enable_external_access = false")
    con.execute("SET allow_persistent_secrets = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con


def _built_here(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the catalog was built from this embedlake's catalog SQL."""
    try:
        (version,) = con.execute("SELECT embedlake_catalog_version()").fetchone()
    except duckdb.CatalogException:
        return False
    return version == _catalog_version()


def _spill_folder() -> Path:
    """The folder DuckDB spills to: `embedlake-spill-<uid>` in the temp folder when it is ours
    alone (a directory, not a link, owned by us, mode 0700), else a private one of this process.

    Anyone can create that name first in a shared /tmp; a folder another user can read or
    replace files in must not receive our spilled data.
    """
    shared = Path(tempfile.gettempdir()) / f"embedlake-spill-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        shared.mkdir(mode=0o700)
    found = os.lstat(shared)
    if (
        stat.S_ISDIR(found.st_mode)
        and found.st_uid == os.getuid()
        and stat.S_IMODE(found.st_mode) == 0o700
    ):
        return shared
    return _private_spill_folder()


@functools.cache
def _private_spill_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="embedlake-spill-"))  # mode 0700, a new name
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def run_checks(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every query in sql/checks/: name -> offending rows (an empty list is a pass)."""
    return {
        name.removesuffix(".sql"): con.execute(sql_text("checks", name)).fetchall()
        for name in _sql_files("checks")
    }


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    """The statements of `query`, each checked to be a read; raises RefusedStatement.

    A statement is judged by the type DuckDB parses it to: SELECT (DESCRIBE, SHOW, SUMMARIZE,
    PIVOT and UNPIVOT with their values given, FROM-first, VALUES and TABLE are SELECTs too), or
    EXPLAIN [ANALYZE] whose wrapped statement is itself admitted.
    """
    statements = _parse(con, query)
    if not statements:
        raise RefusedStatement("the query is empty")
    for statement in statements:
        _check_reads(con, statement)
    return [statement.query for statement in statements]


def _parse(con: duckdb.DuckDBPyConnection, text: str) -> list:
    try:
        return con.extract_statements(text)
    except (duckdb.Error, ValueError) as exc:  # ValueError: a statement type Python lacks
        raise RefusedStatement(str(exc).strip().splitlines()[0]) from exc


def _check_reads(con: duckdb.DuckDBPyConnection, statement, depth: int = 0) -> None:
    try:
        kind = statement.type.name
    except ValueError:  # a type this Python package has no name for (UPDATE EXTENSIONS)
        kind = "unknown to this DuckDB package"
    if kind == "SELECT":
        return
    if kind == "EXPLAIN":
        wrapped = _parse(con, _explained(statement.query)) if depth < 4 else []
        if len(wrapped) == 1:
            _check_reads(con, wrapped[0], depth + 1)
            return
        if wrapped:
            kind = "EXPLAIN of several statements"
    raise RefusedStatement(
        f"only SELECT (and EXPLAIN of a SELECT) may run here; refused a statement of type {kind}"
    )


def _explained(text: str) -> str:
    """The statement an EXPLAIN wraps: the text after EXPLAIN, ANALYZE and an (option list).

    Found with DuckDB's own tokenizer, so comments and strings are never mistaken for keywords;
    anything this does not recognise leaves text that is not a lone SELECT, and is refused.
    """
    found = duckdb.tokenize(text)
    ends = [start for start, _ in found[1:]] + [len(text)]
    tokens = [
        (start, text[start:end].strip().upper())
        for (start, kind), end in zip(found, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]
    rest = tokens[1:] if tokens[:1] and tokens[0][1] == "EXPLAIN" else tokens
    while rest and rest[0][1] in _EXPLAIN_OPTIONS:
        rest = rest[1:]
    if rest and rest[0][1] == "(":
        depth = 0
        for n, (_, word) in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(word, 0)
            if depth == 0:
                rest = rest[n + 1 :]
                break
    return text[rest[0][0] :] if rest else ""
