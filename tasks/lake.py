"""The lake: Parquet parts per table, written atomically, and the writer's lock.

A lake is a local folder, or a folder on shared storage given as an fsspec URL (`s3://bucket/lake`,
`gs://...`, `abfs://...`; the backend's package must be installed, e.g. the `s3` extra). `Lake.at`
turns either into a `Lake`; the rest of the code asks it to write, list and read parts.

Layout under LAKE/:
    runs/<run_id>-<n>-<stage>.parquet  one row per run stage: started, embedded (the counts), then
                                       exactly one of finished, failed or aborted
    files/<run_id>-<seq>.parquet       versions of files: the rows of files that are new or changed
                                       since the source's previous run (all rows on a first run or
                                       with --rehash), written as discovery goes; a file whose
                                       pixels fail to decode gets an error version after embedding
                                       (a lake written before 0.2 has one files/<run_id>.parquet
                                       per run, every file in it)
    files_gone/<run_id>.parquet        paths the source's previous run had and this one does not
    embeddings/<run_id>-<seq>.parquet  embeddings, a part every few batches (values stored as
                                       float16 by default, or float32; read as float32)
    metadata/<run_id>.parquet          the run's sidecar metadata, as given
    probes/, predictions/, label_issues/<run_id>.parquet
                                       linear probes of --label-column COLs (tasks.probes)
    catalog.duckdb                     views and macros over the parts (tasks.catalog)

A part exists under its final name only once it is complete: it is written to a temporary name in
the same folder, fsynced, then renamed into place (and the folder fsynced). Temporary files left
by a killed run are removed by the next run, which holds the lake's lock.

On an object store (S3, GCS, Azure) a part is written to a local staging file and uploaded to its
final key in one upload: an object becomes visible only when its upload completes, whole. On
other fsspec filesystems it is uploaded under a temporary name and moved into place. A URL lake
keeps what must be local (the DuckDB catalog, the writer's lock, staging files, the reports'
`latest` copy) in a cache folder per URL: `$EMBEDLAKE_CACHE/lakes/<hash>/` (default cache:
`~/.cache/embedlake`).
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .schemas import (  # re-exported: callers name them lake.X
    AGREEMENT_SCHEMA,
    CLOSE_FLOOR,
    CLOSE_ROW,
    EMBEDDINGS_SCHEMA,
    FILES_GONE_SCHEMA,
    FILES_SCHEMA,
    LABEL_ISSUES_SCHEMA,
    LIST_SCORES_SCHEMA,
    METADATA_KEYS_SCHEMA,
    NEIGHBORS_SCHEMA,
    PREDICTIONS_SCHEMA,
    PROBES_SCHEMA,
    RUNS_SCHEMA,
    SCHEMA_PART,
    TABLES,
    GroupKey,
)
from .schemas import SCHEMAS as _SCHEMAS

__all__ = [
    "EMBEDDINGS_SCHEMA",
    "FILES_GONE_SCHEMA",
    "FILES_SCHEMA",
    "METADATA_KEYS_SCHEMA",
    "LIST_SCORES_SCHEMA",
    "CLOSE_FLOOR",
    "CLOSE_ROW",
    "NEIGHBORS_SCHEMA",
    "AGREEMENT_SCHEMA",
    "LABEL_ISSUES_SCHEMA",
    "PREDICTIONS_SCHEMA",
    "PROBES_SCHEMA",
    "RUNS_SCHEMA",
    "SCHEMA_PART",
    "TABLES",
    "GroupKey",
    "VECTOR_STORAGE",
    "VectorStorage",
    "Lake",
    "LakeFolder",
    "LocalLake",
    "PartWriter",
    "UrlLake",
    "INDEX_FOLDER",
    "SAMPLES_FOLDER",
    "NotALake",
    "cache_root",
    "embeddings_schema",
    "embeddings_table",
    "ensure_lake",
    "new_run_id",
    "put_part_atomically",
    "rows_to_table",
    "to_json",
    "vectors_of",
    "valid_run_id",
    "write_part_atomically",
]

_TMP_MARK = ".tmp-"
INDEX_FOLDER = "index"  # the ANN indexes (tasks.ann_index), a folder per group
SAMPLES_FOLDER = "samples"  # each graph group's agreement sample (tasks.samples), a part each
# shown to readers, never written: today's columns beside an older lake's schema part
_CURRENT_SCHEMA_PART = "_schema_current.parquet"
# The temporary names embedlake's writers make, and only those: a part or an index file
# (`write_part_atomically`, `put_part_atomically` beside its target, ann_index), an index
# manifest, the catalog being built (catalog.build_catalog, its `.wal` too) and a staged upload.
# A user's file that merely contains `.tmp-` is not ours to delete.
_TEMPORARY = re.compile(r"^(?:.+\.(?:parquet|faiss)|manifest\.json)\.tmp-\d+-[0-9a-f]{6}$")
_CATALOG_TEMPORARY = re.compile(r"^catalog\.duckdb\.tmp-\d+(?:\.wal)?$")
_STAGED_TEMPORARY = re.compile(r"^part\.tmp-\d+-\w+\.parquet$")
_TS = pa.timestamp("us", tz="UTC")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# fsspec protocols of object stores: an object appears whole when its upload completes, so a
# part goes up in one upload of a complete local file (no temporary object, no rename)
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}


class NotALake(ValueError):
    """A folder that holds other things and no lake: embedlake will not write into it."""


def cache_root() -> Path:
    """embedlake's local cache: $EMBEDLAKE_CACHE, else $XDG_CACHE_HOME/embedlake (~/.cache)."""
    if os.environ.get("EMBEDLAKE_CACHE"):
        return Path(os.environ["EMBEDLAKE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedlake"


class Lake(abc.ABC):
    """Where a lake lives, and the operations on its parts (names are relative: table, file).

    `url` is how the lake is shown and how the catalog's views address it; `local_dir` is a local
    folder for what cannot live on shared storage (the catalog, the lock, reports).
    """

    url: str
    local_dir: Path
    path: Path | None = None  # the folder, for a local lake
    catalog_is_cache = False  # a local lake holds its catalog; a URL lake caches it locally

    @staticmethod
    def at(root: str | Path | Lake) -> Lake:
        """The lake at a folder path or an fsspec URL (`file://` URLs are local folders)."""
        if isinstance(root, Lake):
            return root
        text = str(root)
        if text.startswith("file://"):
            return LocalLake(Path(text.removeprefix("file://")))
        if _SCHEME.match(text):
            return UrlLake(text)
        return LocalLake(Path(text))

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def location(self, *names: str) -> str:
        """A folder or part as DuckDB and messages address it."""
        return "/".join([self.url, *names])

    def folder(self, table: str) -> LakeFolder:
        return LakeFolder(self, table)

    @property
    def catalog_file(self) -> Path:
        return self.local_dir / "catalog.duckdb"

    @abc.abstractmethod
    def register(self, con: Any, read_only: bool = False) -> str:
        """Make the lake readable to a DuckDB connection; the location it reads the lake at.

        `read_only`: through a filesystem that can write nothing (tasks.read_only_fs), under a
        location of its own, so that `allowed_directories` = that location gives the connection
        no way to write into the lake, whatever statement gets by.
        """

    def read_table(
        self, table: str, columns: list[str] | None = None, filter: Any = None
    ) -> pa.Table:
        """All committed parts of one table (temporaries are never matched), optionally only
        the rows a pyarrow expression `filter` keeps (read part by part, not all then cut)."""
        dataset = self._dataset(table)
        if dataset is None:
            schema = _SCHEMAS[table]
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        return dataset.to_table(columns=columns, filter=filter)

    def distinct(self, table: str, columns: list[str]) -> list[dict[str, Any]]:
        """The distinct values of some columns of a table, read batch by batch: memory follows
        the distinct keys, not the rows (the embeddings' group keys at 10 M images are 20 M rows,
        ~2 GB read whole as Arrow)."""
        dataset = self._dataset(table)
        if dataset is None:
            return []
        keys: set[tuple] = set()
        for batch in dataset.to_batches(columns=columns):
            found = pa.Table.from_batches([batch]).group_by(columns).aggregate([])
            keys.update(zip(*(found.column(c).to_pylist() for c in columns), strict=True))
        return [dict(zip(columns, key, strict=True)) for key in sorted(keys, key=repr)]

    def _dataset(self, table: str) -> ds.Dataset | None:
        """A table's committed parts as a dataset; None when it has none."""
        names = self.part_names(table)
        if not names:
            return None
        return ds.dataset(
            [self._part_path(table, n) for n in names],
            format="parquet",
            schema=_SCHEMAS.get(table),
            filesystem=self._arrow_filesystem(),
        )

    def ensure(self) -> Lake:
        """Create the lake's folders; write each table's zero-row schema part once.

        The schema parts keep every view bindable before the first data lands (DuckDB refuses a
        glob that matches nothing) and pin the column types for `union_by_name`. A schema part
        written by an older embedlake is rewritten when this one's table has columns it lacks:
        the lake's first write migrates it (the data parts stay as they are).
        """
        self.refuse_if_not_a_lake()
        self._make_folders()
        for table, schema in _SCHEMAS.items():
            if not self._exists(table, SCHEMA_PART) or not self._schema_has(table, schema):
                self.write_part(schema.empty_table(), table, SCHEMA_PART)
        return self

    def schema_stand_ins(self) -> dict[str, bytes]:
        """What a reader is shown in place of schema parts an older embedlake's lake lacks (path
        in the lake -> a zero-row Parquet file's bytes; see tasks.read_only_fs): a missing table
        reads as empty, and a table whose schema part predates columns added since gains them
        (null in its old parts), so today's views bind. Nothing is written: `ensure`, a writer's,
        migrates the lake itself."""
        stand_ins = {}
        for table, schema in _SCHEMAS.items():
            if not self._exists(table, SCHEMA_PART):
                stand_ins[f"{table}/{SCHEMA_PART}"] = _parquet_bytes(schema.empty_table())
            elif not self._schema_has(table, schema):
                stand_ins[f"{table}/{_CURRENT_SCHEMA_PART}"] = _parquet_bytes(schema.empty_table())
        return stand_ins

    def _schema_has(self, table: str, schema: pa.Schema) -> bool:
        stored = pq.read_schema(
            self._part_path(table, SCHEMA_PART), filesystem=self._arrow_filesystem()
        )
        return set(schema.names) <= set(stored.names)

    def missing_tables(self) -> list[str]:
        """Tables without their schema part (a lake made by an older embedlake)."""
        return [table for table in _SCHEMAS if not self._exists(table, SCHEMA_PART)]

    def exists(self) -> bool:
        """Whether a lake was ever created here (its runs table has its schema part)."""
        return self._exists("runs", SCHEMA_PART)

    def refuse_if_not_a_lake(self) -> None:
        """NotALake when this folder holds other things and no lake: a writer must not create
        a lake, or clean up temporaries, in a folder named by mistake.

        A lake is recognised by its runs table holding a part (every lake since the first
        embedlake has one once a run started). A missing or empty folder is a new lake; one
        holding only table folders (and the lock) is a lake whose creation was cut short.
        """
        entries = self._top_entries()
        if (
            entries is None
            or entries <= {*TABLES, SAMPLES_FOLDER, ".lock"}
            or self.part_names("runs")
        ):
            return
        raise NotALake(
            f"{self} is not empty and is not an embedlake lake (it has no runs table): "
            "give --lake a new or empty folder, or an existing lake"
        )

    @contextlib.contextmanager
    def lock(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the lake's writer lock (an OS file lock: released by the kernel if the run dies).

        A second writer waits for the first; `on_wait` is told once that it is waiting.
        Readers never take this lock.
        """
        self.refuse_if_not_a_lake()  # before the lock file lands in a user's folder
        self.local_dir.mkdir(parents=True, exist_ok=True)
        path = self.local_dir / ".lock"
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                if on_wait:
                    on_wait(
                        f"the lake {self} is being written by {holder}; waiting for it to finish"
                    )
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    # what each kind of lake implements
    @abc.abstractmethod
    def write_part(self, table: pa.Table, folder: str, name: str) -> str:
        """Write one part atomically (whole or not at all); its location."""

    @abc.abstractmethod
    def part_names(self, folder: str) -> list[str]:
        """File names of the committed parts in one folder, sorted."""

    @abc.abstractmethod
    def delete_part(self, folder: str, name: str) -> None:
        """Remove one part (the neighbour graph's stale groups)."""

    @abc.abstractmethod
    def remove_stale_temporaries(self) -> list[Any]:
        """Delete temporaries a killed writer left behind; call only while holding the lock."""

    @abc.abstractmethod
    def publish_folder(self, local: Path, *names: str) -> str:
        """Make a local folder (a report) available at `names` under the lake; its location."""

    @abc.abstractmethod
    def _part_path(self, folder: str, name: str) -> str:
        """A part's path as the lake's filesystem (pyarrow's view of it) names it."""

    def _arrow_filesystem(self) -> Any:
        return None  # pyarrow's local filesystem

    @abc.abstractmethod
    def _exists(self, folder: str, name: str) -> bool: ...

    @abc.abstractmethod
    def _top_entries(self) -> set[str] | None:
        """The names in the lake's top folder; None when there is no such folder."""

    @abc.abstractmethod
    def _make_folders(self) -> None: ...


class LocalLake(Lake):
    """A lake in a local (or mounted) folder: fsync and rename, the catalog inside it."""

    def __init__(self, path: Path):
        self.path = path.expanduser().resolve()
        self.url = str(self.path)
        self.local_dir = self.path

    def register(self, con: Any, read_only: bool = False) -> str:
        if not read_only:
            return self.url  # DuckDB reads (and writes) local files itself
        from fsspec.implementations.local import LocalFileSystem

        from .read_only_fs import LOCAL_PROTOCOL, ReadOnlyFileSystem

        fs = ReadOnlyFileSystem(
            LocalFileSystem(), self.url, LOCAL_PROTOCOL, virtual=self.schema_stand_ins()
        )
        con.register_filesystem(fs)
        return f"{LOCAL_PROTOCOL}://{self.url}"

    def write_part(self, table: pa.Table, folder: str, name: str) -> str:
        (self.path / folder).mkdir(exist_ok=True)  # samples/ is made by its first part
        return str(write_part_atomically(table, self.path / folder / name))

    def part_names(self, folder: str) -> list[str]:
        where = self.path / folder
        return sorted(p.name for p in where.glob("*.parquet")) if where.is_dir() else []

    def delete_part(self, folder: str, name: str) -> None:
        (self.path / folder / name).unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> list[Path]:
        index = self.path / INDEX_FOLDER
        groups = [p for p in index.iterdir() if p.is_dir()] if index.is_dir() else []
        found = [
            path
            for folder in [*(self.path / t for t in (*TABLES, SAMPLES_FOLDER)), index, *groups]
            for path in (folder.glob(f"*{_TMP_MARK}*") if folder.is_dir() else [])
            if _TEMPORARY.match(path.name)
        ]
        found += [p for p in self.path.glob("catalog.duckdb*") if _CATALOG_TEMPORARY.match(p.name)]
        removed = [path for path in found if path.is_file()]
        for path in removed:
            path.unlink()
        return removed

    def publish_folder(self, local: Path, *names: str) -> str:
        return str(local)  # reports are written inside the lake already

    def _part_path(self, folder: str, name: str) -> str:
        return str(self.path / folder / name)

    def _exists(self, folder: str, name: str) -> bool:
        return (self.path / folder / name).exists()

    def _top_entries(self) -> set[str] | None:
        return {p.name for p in self.path.iterdir()} if self.path.exists() else None

    def _make_folders(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            (self.path / table).mkdir(exist_ok=True)


class UrlLake(Lake):
    """A lake on shared storage behind fsspec; catalog, lock and staging in a local cache folder.

    The writer's lock is a file lock in that cache folder (the runs of this machine) and, on S3,
    an object `LAKE/.lock` created only if absent (a conditional put, `If-None-Match: *`): the
    runs of every machine and cache. Its holder rewrites it every `LOCK_HEARTBEAT_S`; a waiter
    that sees it unchanged for `LOCK_EXPIRY_S` (on its own clock, so no two clocks are compared)
    takes it over, by a put conditional on what it saw (`If-Match`), as the holder has died.
    Other stores offer no such put through fsspec: there, writers on other machines must be
    serialised by the deployment (`embedlake serve` runs one flow run at a time).
    """

    catalog_is_cache = True
    LOCK_EXPIRY_S = 120.0
    LOCK_HEARTBEAT_S = 15.0
    LOCK_POLL_S = 2.0

    def __init__(self, url: str):
        import fsspec

        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"lake {url}: {exc}") from exc
        self.root = root.rstrip("/")
        self.url = self.fs.unstrip_protocol(self.root)
        self.object_store = bool(_OBJECT_STORES.intersection(self._protocols()))

    @contextlib.contextmanager
    def lock(self, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        with super().lock(on_wait):
            if "s3" not in self._protocols():
                yield
                return
            with _StoreLock(self, on_wait):
                yield

    def _protocols(self) -> tuple[str, ...]:
        protocol = self.fs.protocol
        return protocol if isinstance(protocol, tuple) else (protocol,)

    @property
    def local_dir(self) -> Path:
        # this machine's cache (a Ray worker's own, not the driver's): named by the URL's hash
        return cache_root() / "lakes" / hashlib.sha256(self.url.encode()).hexdigest()[:16]

    def register(self, con: Any, read_only: bool = False) -> str:
        # our own listings may be stale (shards and other machines write parts): list afresh
        self.fs.invalidate_cache()
        if read_only:  # the same URLs, served by a wrapper that only reads
            from .read_only_fs import ReadOnlyFileSystem

            stand_ins = self.schema_stand_ins()
            fs = ReadOnlyFileSystem(self.fs, self.root, self.fs.protocol, virtual=stand_ins)
            con.register_filesystem(fs)
        else:
            con.register_filesystem(self.fs)
        return self.url

    def write_part(self, table: pa.Table, folder: str, name: str) -> str:
        staging = self.local_dir / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        target = self._part_path(folder, name)
        if not self.object_store:  # samples/ is made by its first part
            self.fs.makedirs(f"{self.root}/{folder}", exist_ok=True)
        put_part_atomically(table, self.fs, target, staging, self.object_store)
        return self.location(folder, name)

    def part_names(self, folder: str) -> list[str]:
        where = f"{self.root}/{folder}"
        self.fs.invalidate_cache(where)
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.glob(f"{where}/*.parquet"))

    def delete_part(self, folder: str, name: str) -> None:
        self.fs.rm_file(self._part_path(folder, name))

    def remove_stale_temporaries(self) -> list[str]:
        removed = []
        staging = self.local_dir / "staging"
        for path in staging.glob(f"*{_TMP_MARK}*") if staging.is_dir() else []:
            if _STAGED_TEMPORARY.match(path.name):
                path.unlink()
                removed.append(str(path))
        if not self.object_store:  # elsewhere, temporaries live beside their targets
            self.fs.invalidate_cache()
            for folder in (*TABLES, SAMPLES_FOLDER, INDEX_FOLDER):
                for path in self.fs.find(f"{self.root}/{folder}"):
                    depth = path[len(self.root) + 1 :].count("/")  # index/<group>/<file>: 2
                    if (depth == 1 or (folder == INDEX_FOLDER and depth == 2)) and (
                        _TEMPORARY.match(path.rsplit("/", 1)[-1])
                    ):
                        self.fs.rm_file(path)
                        removed.append(self.fs.unstrip_protocol(path))
        return removed

    def publish_folder(self, local: Path, *names: str) -> str:
        target = "/".join([self.root, *names])
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            self.fs.put_file(str(file), f"{target}/{file.relative_to(local).as_posix()}")
        return self.location(*names)

    def _part_path(self, folder: str, name: str) -> str:
        return f"{self.root}/{folder}/{name}"

    def _arrow_filesystem(self) -> Any:
        return self.fs

    def _exists(self, folder: str, name: str) -> bool:
        return self.fs.exists(self._part_path(folder, name))

    def _top_entries(self) -> set[str] | None:
        self.fs.invalidate_cache(self.root)
        try:
            return {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)}
        except FileNotFoundError:
            return None

    def _make_folders(self) -> None:
        if self.object_store:
            # keys need no folders; a missing bucket is the user's to create, not ours
            bucket = self.root.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise FileNotFoundError(f"lake {self.url}: the bucket {bucket} does not exist")
            return
        for table in TABLES:
            self.fs.makedirs(f"{self.root}/{table}", exist_ok=True)


class _StoreLock:
    """The lock object of an S3 lake (see UrlLake): acquired on entry, kept fresh by a thread."""

    def __init__(self, root: UrlLake, on_wait: Callable[[str], None] | None):
        import socket

        self.root, self.on_wait = root, on_wait
        self.bucket, self.key, _ = root.fs.split_path(f"{root.root}/.lock")
        self.holder = f"{socket.gethostname()} pid {os.getpid()} ({secrets.token_hex(3)})"
        self.beats = 0
        self.etag = ""
        self.lost: str | None = None

    def _put(self, **condition: str) -> str:
        # each beat's content differs, so its ETag (what a waiter watches) changes too
        self.beats += 1
        body = {"holder": self.holder, "beat": self.beats, "expiry_s": self.root.LOCK_EXPIRY_S}
        out = self.root.fs.call_s3(
            "put_object",
            Bucket=self.bucket,
            Key=self.key,
            Body=json.dumps(body).encode(),
            **condition,
        )
        return out["ETag"]

    def _seen(self) -> tuple[str, str] | None:
        """(ETag, holder) of the lock object as it is now; None when there is none."""
        try:
            head = self.root.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            text = self.root.fs.cat_file(f"{self.bucket}/{self.key}")
        except FileNotFoundError:
            return None
        try:
            holder = str(json.loads(text)["holder"])
        except (ValueError, TypeError, KeyError):
            holder = "another writer"
        return head["ETag"], holder

    def __enter__(self) -> _StoreLock:
        import threading
        import time

        seen: tuple[str, float] | None = None  # the ETag we wait on, since when (monotonic)
        told = False
        while True:
            try:
                self.etag = self._put(IfNoneMatch="*")
                break
            except FileExistsError:
                pass
            current = self._seen()
            if current is None:
                continue  # released meanwhile
            etag, holder = current
            if seen is None or seen[0] != etag:
                seen = (etag, time.monotonic())
            elif time.monotonic() - seen[1] > self.root.LOCK_EXPIRY_S:
                try:  # not refreshed for a whole expiry: its writer is gone
                    self.etag = self._put(IfMatch=etag)
                    break
                except OSError:  # another waiter took it first, or it was released
                    seen = None
                    continue
            if self.on_wait and not told:
                told = True
                self.on_wait(
                    f"the lake {self.root} is being written by {holder}; waiting for it to finish"
                )
            time.sleep(self.root.LOCK_POLL_S)
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="lake-lock", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        import errno

        while not self._stop.wait(self.root.LOCK_HEARTBEAT_S):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except OSError as exc:
                # taken over (we stalled past the expiry) or gone; a network error is retried
                if isinstance(exc, FileNotFoundError) or exc.errno == errno.EINVAL:
                    self.lost = str(exc)
                    return

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._beat.join()
        if self.lost is None:
            with contextlib.suppress(OSError):  # only our own lock object: If-Match
                self.root.fs.call_s3(
                    "delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag
                )
        elif exc_info[0] is None:
            raise RuntimeError(
                f"the lake {self.root}: this writer lost its lock ({self.lost}); "
                "another writer may have written meanwhile"
            )


class LakeFolder:
    """One table's folder in a lake: where a PartWriter puts its parts."""

    def __init__(self, lake: Lake, name: str):
        self.lake, self.name = lake, name

    def write_part(self, table: pa.Table, filename: str) -> str:
        return self.lake.write_part(table, self.name, filename)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def valid_run_id(run_id: str) -> str:
    """`run_id` if it has `new_run_id`'s form; it names folders (reports), so a crafted value
    read from a shared lake must not climb out of them."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return run_id


def ensure_lake(lake: Path | Lake) -> Path | Lake:
    """Create the lake's folders and schema parts (see `Lake.ensure`); returns `lake` as given."""
    Lake.at(lake).ensure()
    return lake


# rows per Parquet row group: a point lookup (`WHERE image_id = ...` on a part sorted by
# image_id) reads one group's pages, not the part's
ROW_GROUP_ROWS = 16_384


def write_part_atomically(
    table: pa.Table, target: Path, row_group_rows: int = ROW_GROUP_ROWS
) -> Path:
    """Write `table` to `target`: temp file in the same folder, fsync, rename, fsync folder."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            pq.write_table(table, handle, compression="zstd", row_group_size=row_group_rows)

    replace_atomically(target, write)
    _fsync_dir(target.parent)
    return target


def replace_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` to a temporary name beside `target` (one `remove_stale_temporaries` knows),
    fsync it, rename it over `target`: readers see the old file or the new one, whole."""
    tmp = target.with_name(f"{target.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def put_part_atomically(
    table: pa.Table, fs: Any, target: str, staging: Path, object_store: bool
) -> str:
    """Write `table` to `target` on fsspec filesystem `fs`, visible whole or not at all.

    The part is first written completely to a local file under `staging`. An object store gets
    it in one upload to the final key (the object appears when the upload completes); any other
    filesystem gets it under a temporary name beside the target, then a move.
    """
    local: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=staging, prefix=f"part{_TMP_MARK}{os.getpid()}-", suffix=".parquet", delete=False
        ) as handle:
            local = Path(handle.name)
            pq.write_table(table, handle, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        if object_store:
            fs.put_file(str(local), target)
        else:
            tmp = f"{target}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}"
            try:
                fs.put_file(str(local), tmp)
                fs.mv(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(tmp)
                raise
    finally:
        if local is not None:
            local.unlink(missing_ok=True)
    return target


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stored_precisions(lake: Path | Lake, weights_ids: dict[str, str]) -> set[str]:
    """The precisions of the embeddings the lake holds for these (backbone, weights_id)."""
    keys = Lake.at(lake).distinct("embeddings", ["backbone", "weights_id", "precision"])
    return {k["precision"] for k in keys if weights_ids.get(k["backbone"]) == k["weights_id"]}


VectorStorage = Literal["float16", "float32"]
VECTOR_STORAGE: VectorStorage = "float16"  # the writer's default (README: float16 storage)
_STORAGE_TYPES = {"float16": pa.float16(), "float32": pa.float32()}


def embeddings_table(
    *,
    image_ids: list[str],
    backbone: str,
    weights_id: str,
    precision: str,
    vectors: np.ndarray,
    norms: np.ndarray,
    run_id: str,
    storage: VectorStorage = VECTOR_STORAGE,
) -> pa.Table:
    """Embedding rows built column-wise from an (n, dim) array (no per-row Python).

    `vectors` are L2-normalised (every component within [-1, 1], far inside float16's range);
    `storage` is the type of the stored values: "float16" (the default, half the bytes) or
    "float32". `norm` is float32 either way. The table has EMBEDDINGS_SCHEMA but for the
    `embedding` column's value type.
    """
    if storage not in _STORAGE_TYPES:
        raise ValueError(f"vector storage {storage!r}: float16 or float32")
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(vectors, dtype=storage).reshape(-1))
    now = datetime.now(UTC)
    columns = {
        "image_id": pa.array(image_ids, pa.string()),
        "backbone": pa.array([backbone] * n, pa.string()),
        "weights_id": pa.array([weights_id] * n, pa.string()),
        "precision": pa.array([precision] * n, pa.string()),
        "dim": pa.array(np.full(n, dim, dtype=np.int32)),
        "embedding": pa.ListArray.from_arrays(offsets, values),
        "norm": pa.array(np.asarray(norms, dtype=np.float32)),
        "run_id": pa.array([run_id] * n, pa.string()),
        "created_at": pa.array([now] * n, _TS),
    }
    return pa.table(columns, schema=embeddings_schema(storage))


def embeddings_schema(storage: VectorStorage) -> pa.Schema:
    """EMBEDDINGS_SCHEMA with `embedding` stored as float16 or float32 lists."""
    where = EMBEDDINGS_SCHEMA.get_field_index("embedding")
    return EMBEDDINGS_SCHEMA.set(where, pa.field("embedding", pa.list_(_STORAGE_TYPES[storage])))


class PartWriter:
    """Writes embedding parts on a background thread, so compression and fsync overlap compute.

    `add` queues rows; every `part_rows` rows become one part, sorted by image_id, written
    atomically under `folder/<prefix>-<seq>.parquet` (`folder`: a local folder, or a lake's
    `LakeFolder`).
    `close` flushes the rest and re-raises a writer error. At most two parts wait in the queue,
    which bounds memory.
    """

    def __init__(self, folder: Path | LakeFolder, prefix: str, part_rows: int):
        import queue
        import threading

        if isinstance(folder, Path):
            folder = LakeFolder(Lake.at(folder.parent), folder.name)
        self.folder, self.prefix, self.part_rows = folder, prefix, part_rows
        self.seconds = 0.0
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._seq = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._run, name="part-writer", daemon=True)
        self._thread.start()

    def add(self, table: pa.Table) -> None:
        self._raise_if_failed()
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self.part_rows:
            self._submit()

    def _submit(self) -> None:
        if self._pending:
            name = f"{self.prefix}-{self._seq:06d}.parquet"
            # sorted by key: each row group's min/max then narrows a lookup by image_id
            self._queue.put((pa.concat_tables(self._pending).sort_by("image_id"), name))
            self._pending, self._rows, self._seq = [], 0, self._seq + 1

    def _run(self) -> None:
        import time

        while (item := self._queue.get()) is not None:
            if self._error is None:
                started = time.perf_counter()
                try:
                    self.folder.write_part(*item)
                except BaseException as exc:  # handed to the producer by _raise_if_failed
                    self._error = exc
                self.seconds += time.perf_counter() - started

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write what is pending and wait for the thread; raises the first write error."""
        self._submit()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()


def vectors_of(table: pa.Table) -> np.ndarray:
    """The `embedding` list column of equal-length rows as an (n, dim) float32 array, whether the
    part stored float32 or float16 values."""
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(table.num_rows, -1)


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table in `schema`'s column order from dict rows (missing keys become nulls)."""
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
