"""The DuckDB catalog: views and macros over the lake's Parquet, and read-only connections to it.

`catalog.duckdb` holds no data. It is built from `sql/catalog/*.sql` (in name order) into a new
file that is then renamed over the old one, so a reader never sees a half-built catalog and never
waits on the writer. It can be rebuilt from the Parquet alone at any time (`build_catalog`).

Read connections are locked down: read-only, no file access outside the lake, no extension
loading, configuration frozen, and only statements that read (SELECT, EXPLAIN) are admitted,
because DuckDB's read-only mode still lets COPY ... TO write files inside allowed directories.

A lake on shared storage (an fsspec URL) keeps its catalog in the local cache folder (DuckDB keeps
no database file on an object store); its views read the URL's globs through the fsspec
filesystem, registered with every connection (no httpfs extension needed), and the read-only
connection's `allowed_directories` is the URL's prefix: DuckDB applies it to registered
filesystems too, with external access off. A missing cached catalog is rebuilt on first use.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from importlib import resources
from pathlib import Path

import duckdb

from .lake import Lake

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
_READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}


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


def _literal(location: str) -> str:
    # the lake's location goes into DDL we write ourselves (DuckDB binds no parameters in CREATE
    # VIEW); doubling quotes keeps any folder name a single string literal
    return location.replace("'", "''")


def latest_metadata_part(lake: str | Path | Lake) -> str:
    """The location of the newest run's sidecar part (the schema part when there is none)."""
    lake = Lake.at(lake)
    parts = [name for name in lake.part_names("metadata") if name != "_schema.parquet"]
    return lake.location("metadata", parts[-1] if parts else "_schema.parquet")


def build_catalog(lake: str | Path | Lake, create: bool = True) -> Path:
    """(Re)build the lake's catalog.duckdb from the Parquet parts; atomic for readers.

    `create=False` (a reader rebuilding a URL lake's cached catalog) writes nothing to the lake:
    a table without its schema part is an error, not a part written on the reader's behalf.
    """
    lake = Lake.at(lake)
    if create:
        lake.ensure()
    elif missing := lake.missing_tables():
        raise FileNotFoundError(
            f"the lake at {lake} has no {', '.join(missing)} table yet: "
            f"run `embedlake run SOURCE --lake {lake}` once with this embedlake version"
        )
    target = lake.catalog_file
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    replacements = {
        "@LAKE@": _literal(lake.location()),
        "@METADATA_PART@": _literal(latest_metadata_part(lake)),
    }
    try:
        with duckdb.connect(str(tmp)) as con:
            lake.register(con)
            for name in _sql_files("catalog"):
                text = sql_text("catalog", name)
                for marker, value in replacements.items():
                    text = text.replace(marker, value)
                con.execute(text)
            _create_backbone_views(con)
            con.execute("CHECKPOINT")
        os.replace(tmp, target)
        if lake.catalog_is_cache:
            _version_file(target).write_text(_catalog_version())
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return target


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
        text = template.replace("@VIEW@", view).replace("@DIM@", str(int(found.pop())))
        con.execute(text.replace("@BACKBONE@", backbone.replace("'", "''")))


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
    lake: str | Path | Lake, memory_limit: str = "4GB"
) -> duckdb.DuckDBPyConnection:
    """A connection to the catalog that can read the lake and nothing else."""
    lake = Lake.at(lake)
    catalog = lake.catalog_file
    stale = lake.catalog_is_cache and catalog.is_file() and not _is_current(catalog)
    if stale or not catalog.is_file():
        first = f"run `embedlake run SOURCE --lake {lake}` first"
        if not lake.catalog_is_cache:
            raise FileNotFoundError(f"no catalog at {catalog}: {first}")
        if not lake.exists():
            raise FileNotFoundError(f"no lake at {lake}: {first}")
        build_catalog(lake, create=False)  # a URL lake's catalog: a local cache of the Parquet
    # DuckDB spills big sorts and joins beside the database file by default, which for a local
    # lake is inside it: a reader must write nothing there, so spills go to a private folder
    spill = Path(tempfile.gettempdir()) / f"embedlake-spill-{os.getuid()}"
    spill.mkdir(mode=0o700, exist_ok=True)
    con = duckdb.connect(
        str(catalog),
        read_only=True,
        config={"memory_limit": memory_limit, "temp_directory": str(spill)},
    )
    lake.register(con)
    con.execute("SET allowed_directories = [$dir]", {"dir": lake.allowed_directory})
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con


def run_checks(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every query in sql/checks/: name -> offending rows (an empty list is a pass)."""
    return {
        name.removesuffix(".sql"): con.execute(sql_text("checks", name)).fetchall()
        for name in _sql_files("checks")
    }


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    """The statements of `query`, each checked to be a read; raises RefusedStatement."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise RefusedStatement(str(exc).splitlines()[0]) from exc
    if not statements:
        raise RefusedStatement("the query is empty")
    for statement in statements:
        kind = statement.type.name
        if kind not in _READ_ONLY_TYPES:
            raise RefusedStatement(
                f"only SELECT (and EXPLAIN) may run here; refused a {kind} statement"
            )
    return [statement.query for statement in statements]
