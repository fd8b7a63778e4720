"""`embedlake explore`: a local web app over the lake (the map, filters, images, review queues).

A `ThreadingHTTPServer` from the standard library serves the static page (`explore_static/`:
vanilla JS and WebGL, nothing fetched from the network) and a small API. Everything is read
through `catalog.connect_read_only` (a few pooled read-only connections, each under the
explorer's memory limit; every statement checked by `check_read_only` and stopped after the
timeout), except a review, which goes to `reviews.add_reviews` (the lake's one writer path, under
its lock). The SQL is in `sql/explore/`, one query a file.

One order of points per map group, by image_id (precisely: by its first 16 hex digits read as an
unsigned 64-bit `key`, then the whole id). The server keeps each loaded group's keys (8 bytes a
point) and places colour and filter results in that order with a binary search, so no query
sorts the collection twice and no id list travels to the page.

API (GET unless said; binary bodies are little-endian):
    /api/groups                       JSON: the map's groups (backbone, weights_id, precision,
                                      points, map_version)
    /api/points?g=G                   float32 x,y interleaved (8 bytes a point); X-Count header
    /api/colors?g=G&by=B[&column=C]   uint8 code a point (0 = no value); X-Legend header (JSON)
    /api/filter?g=G&where=SQL         a bitmask over the points (bit i%8 of byte i/8);
                                      X-Count: the matches. A refused statement: 400, one line
    /api/ids?g=G&i=1,2,3              JSON: those points' image_id and path
    /api/image/ID                     JSON: files, metadata, labels, neighbours per group, reviews
    /api/thumb/ID                     image/jpeg (the lake's thumbnail), 404 where none
    /api/queue/NAME?g=G&pos=N         JSON: one case of a review queue and the number of cases
    POST /api/review                  JSON {image_ids, decision, value, note, who, label_column}
G is `backbone/weights_id/precision` (URL-encoded). An image_id is checked to be 64 hex digits
before any use (400 otherwise); one the current collection lacks is 404.

Bound to 127.0.0.1 by default. On any other host every request needs the random token printed
with the URL (`?token=`, then a cookie the page gets on first load), as Jupyter does. Requests
whose Host header is not the bound address (DNS rebinding) and cross-site POSTs (a foreign
Origin, or a body that is not JSON) are refused.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import mimetypes
import queue
import re
import secrets
import signal
import sys
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .catalog import RefusedStatement, check_read_only, connect_read_only, sql_text
from .lake import Lake
from .queries import QueryTimeout, time_limit

__all__ = [
    "COLOR_BY",
    "QUEUES",
    "ExploreError",
    "Explorer",
    "make_server",
    "serve",
]

_IMAGE_ID = re.compile(r"[0-9a-f]{64}")
_TOP_CATEGORIES = 30  # a categorical colouring names its 30 commonest values; the rest: other
_BINS = 16  # a numeric colouring's equal-width bins
_MAX_IDS = 500  # points one /api/ids call resolves
_MAX_WHERE = 10_000  # characters of a filter
_MAX_BODY = 1 << 20  # bytes of a POSTed review
_NEIGHBORS_K = 10
_CACHED_GROUPS = 2  # groups whose points the server keeps (16 bytes a point each)
_CACHED_COLORS = 4  # colourings it keeps (1 byte a point each)
_BATCH_ROWS = 1 << 20  # rows of the points read at a time
_TOKEN_COOKIE = "embedlake_token"
_MAP_INPUTS = ("map", "files", "files_gone", "runs")  # the tables the points are read from
_ALL_TABLES = (*_MAP_INPUTS, "metadata", "neighbors", "predictions", "label_issues", "reviews")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

# colour-by: name -> (SQL file, kind, which parameters it takes)
COLOR_BY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "label": ("color_metadata.sql", "category", ()),  # the column: see _colors
    "prediction": ("color_prediction.sql", "category", ("group", "column")),
    "label_quality": ("color_label_quality.sql", "number", ("group", "column")),
    "outlier": ("color_outlier.sql", "number", ("group",)),
    "source": ("color_source.sql", "category", ()),
    "run": ("color_run.sql", "category", ()),
    "camera": ("color_camera.sql", "category", ()),
    "duplicates": ("color_duplicates.sql", "category", ("group", "threshold")),
    "review": ("color_review.sql", "category", ()),
}
# review queues: name -> (SQL file, parameters beside the group and pos)
QUEUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "near_duplicates": ("queue_near_duplicates.sql", ("threshold",)),
    "label_issues": ("queue_label_issues.sql", ("column",)),
    "outliers": ("queue_outliers.sql", ()),
    "leaky_splits": ("queue_leaky_splits.sql", ("threshold", "split_column")),
}
_DEFAULTS = {"column": "label", "threshold": 0.95, "split_column": "split"}


class ExploreError(ValueError):
    """A request the explorer refuses; `status` is the HTTP status, the message one line."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


def _sql(name: str) -> str:
    return sql_text("explore", name)


def check_image_id(text: str) -> str:
    """`text` if it is an image_id (64 lowercase hex digits), else a 400."""
    if not isinstance(text, str) or not _IMAGE_ID.fullmatch(text):
        raise ExploreError(f"{str(text)[:80]!r} is not an image_id (64 hex digits)")
    return text


@dataclass(frozen=True)
class Group:
    backbone: str
    weights_id: str
    precision: str

    @classmethod
    def parse(cls, text: str | None) -> Group:
        parts = (text or "").split("/")
        if len(parts) != 3 or not all(parts) or any(len(p) > 200 for p in parts):
            raise ExploreError("g: expected backbone/weights_id/precision")
        return cls(*parts)

    def params(self) -> dict[str, str]:
        return {
            "backbone": self.backbone,
            "weights_id": self.weights_id,
            "precision": self.precision,
        }


class Explorer:
    """The explorer's reads (and its one write, a review) on one lake."""

    def __init__(
        self,
        lake: str | Path | Lake,
        timeout: float = 60.0,
        memory_limit: str = "384MB",
        connections: int = 2,
    ):
        self.lake = Lake.at(lake)
        if not self.lake.exists():
            raise FileNotFoundError(
                f"no lake at {self.lake}: run `embedlake run SOURCE --lake {self.lake}` first"
            )
        self.timeout = timeout
        self.memory_limit = memory_limit
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(connections)
        self._active: set[duckdb.DuckDBPyConnection] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._busy = 0
        self._cache: OrderedDict[Any, tuple[tuple, Any]] = OrderedDict()
        self._computing: dict[Any, threading.Lock] = {}
        self._closed = False
        with self._connection():  # fails now, in one line, if the catalog cannot be opened
            pass

    # --- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A pooled read-only connection; what runs on it stops after the timeout."""
        if not self._slots.acquire(timeout=self.timeout):
            raise ExploreError("the explorer is busy; try again", HTTPStatus.SERVICE_UNAVAILABLE)
        con = None
        with self._idle:
            self._busy += 1  # a thread inside DuckDB: close() waits for it
        try:
            if self._closed:
                raise ExploreError("the explorer is stopping", HTTPStatus.SERVICE_UNAVAILABLE)
            try:
                con = self._pool.get_nowait()
            except queue.Empty:
                con = connect_read_only(self.lake, memory_limit=self.memory_limit)
            with self._lock:
                self._active.add(con)
            try:
                with time_limit(con, self.timeout):
                    yield con
            except QueryTimeout as exc:
                raise ExploreError(str(exc), HTTPStatus.REQUEST_TIMEOUT) from exc
            except duckdb.OutOfMemoryException as exc:
                first = str(exc).strip().splitlines()[0]
                raise ExploreError(f"{first} (the explorer's --memory-limit)") from exc
            finally:
                with self._lock:
                    self._active.discard(con)
            if self._closed:
                con.close()
            else:
                self._pool.put(con)
            con = None
        finally:
            if con is not None:  # after an error the connection may be mid-statement: drop it
                with contextlib.suppress(Exception):
                    con.close()
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
            self._slots.release()

    def _query(self, name: str, params: dict[str, Any] | None = None, **fill: str) -> pa.Table:
        batches: list[pa.RecordBatch] = []
        schema = self._stream(name, params, batches.append, **fill)
        return pa.Table.from_batches(batches, schema=schema)

    def _stream(
        self,
        name: str,
        params: dict[str, Any] | None,
        each: Callable[[pa.RecordBatch], Any],
        **fill: str,
    ) -> pa.Schema:
        """Run one statement of sql/explore/<name> and hand its result to `each`, a batch at a
        time (a big result is never held twice: as DuckDB's and as Arrow's); its schema."""
        text = _sql(name)
        for marker, value in fill.items():
            text = text.replace(f"@{marker}@", value)
        with self._connection() as con:
            statements = check_read_only(con, text)
            if len(statements) != 1:
                raise ExploreError("one statement at a time: the filter is a WHERE expression")
            reader = con.sql(statements[0], params=params or {}).to_arrow_reader(_BATCH_ROWS)
            for batch in reader:
                each(batch)
            return reader.schema

    def _rows(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._query(name, params).to_pylist()

    def close(self, wait: float = 1.5) -> None:
        """Interrupt what runs, wait (up to `wait` seconds) for every thread to leave DuckDB,
        and close every connection (Ctrl-C). A process must not exit with a thread inside
        DuckDB: its C++ code aborts when the interpreter ends that thread."""
        self._closed = True
        with self._lock:
            for con in list(self._active):
                with contextlib.suppress(Exception):
                    con.interrupt()
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=wait)
        while True:
            try:
                con = self._pool.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                con.close()

    # --- the map -----------------------------------------------------------------------
    # The map view costs a scan of the map and of `images` (seconds a million points here), so
    # the groups and each loaded group's points are kept, with the part names of the tables they
    # follow from: a run that changes any of them changes the names, and the next request reads
    # them again. Two groups are kept (16 bytes a point each: keys, x and y).
    def _stamp(self, tables: tuple[str, ...]) -> tuple:
        return tuple(tuple(self.lake.part_names(table)) for table in tables)

    def _cached(self, key: Any, compute: Callable[[], Any], tables: tuple[str, ...] = ()) -> Any:
        stamp = self._stamp(tables or _MAP_INPUTS)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamp:
                self._cache.move_to_end(key)
                return hit[1]
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:  # one computation per key at a time; the others wait for it
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None and hit[0] == stamp:
                    return hit[1]
            value = compute()
            pa.default_memory_pool().release_unused()  # Arrow's allocator keeps what it freed
            with self._lock:
                self._cache[key] = (stamp, value)
                self._cache.move_to_end(key)
                for kind, most in ((Group, _CACHED_GROUPS), (tuple, _CACHED_COLORS)):
                    kept = [k for k in self._cache if isinstance(k, kind)]
                    while len(kept) > most:
                        self._cache.pop(kept.pop(0))
            return value

    def groups(self) -> list[dict[str, Any]]:
        return self._cached("groups", lambda: self._rows("groups.sql"))

    def points(self, group: Group) -> tuple[np.ndarray, np.ndarray]:
        """The group's keys (uint64, sorted) and points (float32 x, y interleaved)."""
        return self._cached(group, lambda: self._read_points(group))

    def _read_points(self, group: Group) -> tuple[np.ndarray, np.ndarray]:
        """Streamed and sorted here: DuckDB holds no sorted copy of 10 M rows and no Arrow table
        of them waits beside the arrays (the server's memory goal: 1 GiB at 10 M)."""
        keys, xs, ys = [], [], []

        def take(batch: pa.RecordBatch) -> None:
            keys.append(batch.column("key").to_numpy(zero_copy_only=False).astype(np.uint64))
            xs.append(batch.column("x").to_numpy(zero_copy_only=False).astype("<f4"))
            ys.append(batch.column("y").to_numpy(zero_copy_only=False).astype("<f4"))

        self._stream("points.sql", group.params(), take)
        key = np.concatenate(keys) if keys else np.empty(0, np.uint64)
        keys.clear()
        order = np.argsort(key, kind="stable")
        key = key[order]
        xy = np.empty((len(key), 2), dtype="<f4")
        for axis, parts in enumerate((xs, ys)):  # one axis at a time: less held at once
            if parts:
                xy[:, axis] = np.concatenate(parts)[order]
            parts.clear()
        return key, xy

    def keys(self, group: Group) -> np.ndarray:
        return self.points(group)[0]

    def warm(self) -> None:
        """Read the groups and the first group's points ahead of the page (a thread at start)."""
        with contextlib.suppress(Exception):
            found = self.groups()
            if found:
                first = found[0]
                self.points(Group(first["backbone"], first["weights_id"], first["precision"]))

    def _positions(self, group: Group, keys: np.ndarray) -> np.ndarray:
        return _positions(self.keys(group), keys)

    def colors(
        self, group: Group, by: str, column: str | None = None, threshold: float | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """A uint8 code per point (0: no value) and the legend; kept until the lake changes."""
        if by not in COLOR_BY:
            raise ExploreError(f"colour by {by!r}: expected one of {', '.join(COLOR_BY)}")
        name, kind, takes = COLOR_BY[by]
        column = (column or _DEFAULTS["column"]) if "column" in takes or by == "label" else None
        if "threshold" in takes:
            threshold = _DEFAULTS["threshold"] if threshold is None else threshold
        else:
            threshold = None
        key = ("colors", group, by, column, threshold)
        return self._cached(
            key, lambda: self._colors(group, by, column, threshold), tables=_ALL_TABLES
        )

    def _colors(
        self, group: Group, by: str, column: str | None, threshold: float | None
    ) -> tuple[bytes, dict[str, Any]]:
        name, kind, takes = COLOR_BY[by]
        params: dict[str, Any] = {}
        fill: dict[str, str] = {}
        if "group" in takes:
            params.update(group.params())
        if "column" in takes:
            params["column"] = column
        if "threshold" in takes:
            params["threshold"] = threshold
        if by == "label":  # a sidecar column, by name: only one the metadata view has
            known = [row["column_name"] for row in self._rows("metadata_columns.sql")]
            if column not in known or column in ("path", "image_id"):
                shown = ", ".join(c for c in known if c not in ("path", "image_id")) or "none"
                raise ExploreError(f"the sidecar has no column {column!r} (columns: {shown})")
            fill["COLUMN"] = '"' + column.replace('"', '""') + '"'
        order = self.keys(group)  # the points first (held), then the colour's rows
        codes = np.zeros(len(order), dtype=np.uint8)
        ats: list[np.ndarray] = []  # each batch's rows that are points: where, and their values
        values: list[pa.Array] = []

        def take(batch: pa.RecordBatch) -> None:
            if batch.column("key").null_count:
                batch = batch.filter(batch.column("key").is_valid())
            at = _positions(order, batch.column("key").to_numpy().astype(np.uint64))
            inside = at >= 0
            ats.append(at[inside].astype(np.int32))  # < 2**31 points: half the bytes
            values.append(batch.column("value").filter(inside))

        schema = self._stream(name, params, take, **fill)
        at = np.concatenate(ats) if ats else np.empty(0, np.int32)
        ats.clear()
        chunked = pa.chunked_array(values, type=schema.field("value").type)
        if kind == "number":
            legend = _number_codes(chunked, at, codes)
        else:
            legend = _category_codes(chunked, at, codes)
        legend.update({"by": by, "kind": kind, "column": column})
        return codes.tobytes(), legend

    def filter(self, group: Group, where: str) -> tuple[bytes, int]:
        """A bitmask over the group's points: those whose image matches `where`."""
        where = (where or "").strip()
        if not where:
            raise ExploreError("the filter is empty")
        if len(where) > _MAX_WHERE:
            raise ExploreError(f"the filter is longer than {_MAX_WHERE} characters")
        try:
            table = self._query("filter.sql", WHERE=where)
        except RefusedStatement as exc:  # a writing statement, or text that does not parse
            written = str(exc).startswith("only SELECT")
            raise ExploreError(f"refused: {exc}" if written else f"the filter: {exc}") from exc
        except duckdb.Error as exc:
            raise ExploreError(_one_line(exc)) from exc
        keys = table.column("key").drop_null().to_numpy().astype(np.uint64)
        at = self._positions(group, keys)
        at = at[at >= 0]
        mask = np.zeros(len(self.keys(group)), dtype=bool)
        mask[at] = True
        return np.packbits(mask, bitorder="little").tobytes(), int(mask.sum())

    def ids(self, group: Group, indices: list[int]) -> list[dict[str, Any]]:
        """image_id and path of the group's points at `indices` (in that order)."""
        order = self.keys(group)
        indices = [i for i in indices[:_MAX_IDS] if 0 <= i < len(order)]
        prefixes = [f"{int(order[i]):016x}" for i in indices]
        found = self._rows("point_ids.sql", {"prefixes": sorted(set(prefixes))})
        by_prefix: dict[str, dict[str, Any]] = {}
        for row in found:
            by_prefix.setdefault(row["image_id"][:16], row)
        return [
            {"i": i, **by_prefix[p]}
            for i, p in zip(indices, prefixes, strict=True)
            if p in by_prefix
        ]

    # --- an image ----------------------------------------------------------------------
    def image(self, image_id: str) -> dict[str, Any]:
        image_id = check_image_id(image_id)
        params = {"image_id": image_id}
        files = self._rows("image_files.sql", params)  # none: not a current image
        if not files:
            raise ExploreError(f"the lake holds no image {image_id}", HTTPStatus.NOT_FOUND)
        neighbors: dict[str, dict[str, Any]] = {}
        for row in self._rows("image_neighbors.sql", {**params, "k": _NEIGHBORS_K}):
            name = "/".join((row["backbone"], row["weights_id"], row["precision"]))
            entry = neighbors.setdefault(
                name, {"g": name, "backbone": row["backbone"], "items": []}
            )
            entry["items"].append(
                {k: row[k] for k in ("rank", "neighbor_id", "similarity", "path")}
            )
        return {
            "image_id": image_id,
            "files": _jsonable(files),
            "metadata": _jsonable(self._rows("image_metadata.sql", params)),
            "labels": _jsonable(self._rows("image_labels.sql", params)),
            "neighbors": list(neighbors.values()),
            "reviews": _jsonable(self._rows("image_reviews.sql", params)),
        }

    def thumbnail(self, image_id: str) -> bytes:
        image_id = check_image_id(image_id)
        rows = self._rows("thumbnail.sql", {"image_id": image_id})
        if not rows or not rows[0]["thumbnail"]:
            raise ExploreError(f"no thumbnail of {image_id}", HTTPStatus.NOT_FOUND)
        return rows[0]["thumbnail"]

    # --- review queues -----------------------------------------------------------------
    def queue_case(
        self, name: str, group: Group, pos: int, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        if name not in QUEUES:
            raise ExploreError(f"queue {name!r}: expected one of {', '.join(QUEUES)}")
        if pos < 0:
            raise ExploreError("pos must be 0 or more")
        file, takes = QUEUES[name]
        options = options or {}
        params: dict[str, Any] = {**group.params(), "pos": pos}
        for key in takes:
            value = options.get(key) or _DEFAULTS[key]
            if key == "threshold":
                value = _float(value, "threshold")
            params["column" if key == "split_column" else key] = value
        rows = self._rows(file, params)
        if not rows:
            total = 0 if pos == 0 else None
            return {"queue": name, "pos": pos, "total": total, "case": None}
        case = _jsonable(rows)[0]
        images = self._rows("case_images.sql", {"image_ids": case["image_ids"]})
        case["images"] = _jsonable(images)
        return {"queue": name, "pos": pos, "total": case.pop("total"), "case": case}

    # --- the one write -----------------------------------------------------------------
    def review(self, body: dict[str, Any]) -> int:
        from .reviews import ReviewError, add_reviews

        ids = body.get("image_ids")
        if not isinstance(ids, list) or not ids or len(ids) > _MAX_IDS:
            raise ExploreError(f"image_ids: expected a list of 1 to {_MAX_IDS} image_ids")
        rows = []
        for image_id in ids:
            rows.append(
                {
                    "image_id": check_image_id(image_id),
                    "decision": body.get("decision"),
                    "value": _text_or_none(body.get("value"), "value"),
                    "label_column": _text_or_none(body.get("label_column"), "label_column"),
                    "note": _text_or_none(body.get("note"), "note"),
                    "who": _text_or_none(body.get("who"), "who"),
                }
            )
        try:
            return add_reviews(self.lake, rows)
        except ReviewError as exc:
            status = HTTPStatus.NOT_FOUND if "holds no image" in str(exc) else 400
            raise ExploreError(str(exc), status) from exc


def _text_or_none(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise ExploreError(f"{name}: expected text of at most 2000 characters")
    return value


def _float(text: Any, name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError) as exc:
        raise ExploreError(f"{name}: expected a number") from exc
    if not np.isfinite(value):
        raise ExploreError(f"{name}: expected a finite number")
    return value


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with values JSON can carry (times as text, bytes left out, NaN as null)."""

    def convert(value: Any) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if np.isfinite(value) else None
        if isinstance(value, bytes | bytearray):
            return None
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        return str(value)

    return [{str(k): convert(v) for k, v in row.items()} for row in rows]


def _positions(order: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Where `keys` are in the sorted `order` (-1 where absent); in place, one array."""
    if not len(order):
        return np.full(len(keys), -1, dtype=np.int64)
    at = np.searchsorted(order, keys)
    np.minimum(at, len(order) - 1, out=at)
    at[order[at] != keys] = -1
    return at


def _category_codes(values: pa.ChunkedArray, at: np.ndarray, codes) -> dict:
    """Codes 1..30 for the commonest values, 31 for the rest, 0 for none; writes `codes`.
    Through a dictionary (an int32 index a row, a uint8 code a row): 10 M rows stay well within
    the server's memory goal."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(pc.cast(values, pa.string())).combine_chunks()
    names = encoded.dictionary.to_pylist()
    index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    del encoded
    counts = np.bincount(index[index >= 0], minlength=len(names))
    ranked = sorted(range(len(names)), key=lambda n: (-counts[n], names[n]))
    top = ranked[:_TOP_CATEGORIES]
    lut = np.full(len(names) + 1, _TOP_CATEGORIES + 1, dtype=np.uint8)  # the last: none
    lut[top] = np.arange(1, len(top) + 1, dtype=np.uint8)
    lut[-1] = 0
    codes[at] = lut[index]  # index -1 reads lut[-1]: none
    placed = np.bincount(codes, minlength=_TOP_CATEGORIES + 2)
    entries = [
        {"code": k + 1, "label": names[n], "count": int(placed[k + 1])} for k, n in enumerate(top)
    ]
    if len(names) > _TOP_CATEGORIES:
        entries.append(
            {
                "code": _TOP_CATEGORIES + 1,
                "label": f"({len(names) - _TOP_CATEGORIES} other values)",
                "count": int(placed[_TOP_CATEGORIES + 1]),
            }
        )
    return {"entries": entries, "none": int(placed[0]), "values": len(names)}


def _number_codes(values: pa.ChunkedArray, at: np.ndarray, codes) -> dict:
    """Codes 1..16 for equal-width bins between the smallest and largest value, 0 for none."""
    number = values.to_numpy(zero_copy_only=False).astype(np.float64)
    ok = np.isfinite(number)
    if not ok.any():
        return {"entries": [], "none": int(len(codes)), "min": None, "max": None}
    low, high = float(number[ok].min()), float(number[ok].max())
    width = (high - low) / _BINS or 1.0
    bins = np.clip(((number[ok] - low) / width).astype(np.int64), 0, _BINS - 1)
    codes[at[ok]] = (bins + 1).astype(np.uint8)
    counts = np.bincount(codes, minlength=_BINS + 1)
    entries = [
        {
            "code": b + 1,
            "label": f"{low + b * width:.4g} – {low + (b + 1) * width:.4g}",
            "count": int(counts[b + 1]),
        }
        for b in range(_BINS)
    ]
    return {"entries": entries, "none": int(counts[0]), "min": low, "max": high}


# --- HTTP ------------------------------------------------------------------------------------
_STATIC = {
    "/": "index.html",
    "/index.html": "index.html",
    "/app.js": "app.js",
    "/style.css": "style.css",
}


def _static(name: str) -> bytes:
    return resources.files("embedlake.tasks").joinpath("explore_static", name).read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    explorer: Explorer
    token: str | None
    hosts: set[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "embedlake-explore"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the URL is what matters
        pass

    # --- checks ---
    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        return host in self.server.hosts

    def _token_ok(self, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(allowed, whether to set the cookie)."""
        token = self.server.token
        if token is None:
            return True, False
        given = query.get("token", [""])[0]
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True, True
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        if _TOKEN_COOKIE in cookie and hmac.compare_digest(
            cookie[_TOKEN_COOKIE].value.encode(), token.encode()
        ):
            return True, False
        header = self.headers.get("X-Embedlake-Token") or ""
        if header and hmac.compare_digest(header.encode(), token.encode()):
            return True, False
        return False, False

    # --- responses ---
    def _send(
        self,
        status: int,
        body: bytes | memoryview,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'",
        )
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    # --- dispatch ---
    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _dispatch(self, handler: Callable[[str, dict[str, list[str]]], None]) -> None:
        try:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query, max_num_fields=50)
            if not self._host_ok():
                self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
                return
            allowed, set_cookie = self._token_ok(query)
            if not allowed:
                self._error(HTTPStatus.FORBIDDEN, "a token is required: open the URL printed")
                return
            self._set_cookie = set_cookie
            handler(url.path, query)
        except ExploreError as exc:
            self._error(exc.status, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # one line for the page; the server goes on
            with contextlib.suppress(Exception):
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, _one_line(exc))

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        explorer = self.server.explorer

        def arg(name: str, default: str | None = None) -> str | None:
            return query.get(name, [default])[0]

        if path in _STATIC:
            name = _STATIC[path]
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            headers = {}
            if self._set_cookie and self.server.token:
                headers["Set-Cookie"] = (
                    f"{_TOKEN_COOKIE}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"
                )
            self._send(200, _static(name), f"{kind}; charset=utf-8", headers)
        elif path == "/api/groups":
            self._json({"groups": _jsonable(explorer.groups())})
        elif path == "/api/points":
            _, xy = explorer.points(Group.parse(arg("g")))
            body = memoryview(np.ascontiguousarray(xy)).cast("B")  # no copy of the points
            self._send(200, body, "application/octet-stream", {"X-Count": str(len(xy))})
        elif path == "/api/colors":
            threshold = arg("threshold")
            codes, legend = explorer.colors(
                Group.parse(arg("g")),
                arg("by") or "label",
                arg("column"),
                None if threshold is None else _float(threshold, "threshold"),
            )
            headers = {"X-Legend": json.dumps(legend), "X-Points": str(len(codes))}
            self._send(200, codes, "application/octet-stream", headers)
        elif path == "/api/filter":
            group = Group.parse(arg("g"))
            mask, count = explorer.filter(group, arg("where") or "")
            headers = {"X-Count": str(count), "X-Points": str(len(explorer.keys(group)))}
            self._send(200, mask, "application/octet-stream", headers)
        elif path == "/api/ids":
            try:
                indices = [int(i) for i in (arg("i") or "").split(",") if i]
            except ValueError as exc:
                raise ExploreError("i: expected integers separated by commas") from exc
            self._json({"points": explorer.ids(Group.parse(arg("g")), indices)})
        elif path.startswith("/api/image/"):
            self._json(explorer.image(path.removeprefix("/api/image/")))
        elif path.startswith("/api/thumb/"):
            body = explorer.thumbnail(path.removeprefix("/api/thumb/"))
            self._send(200, body, "image/jpeg")
        elif path.startswith("/api/queue/"):
            try:
                pos = int(arg("pos") or "0")
            except ValueError as exc:
                raise ExploreError("pos: expected an integer") from exc
            options = {k: v[0] for k, v in query.items() if k in _DEFAULTS}
            self._json(
                explorer.queue_case(
                    path.removeprefix("/api/queue/"), Group.parse(arg("g")), pos, options
                )
            )
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path[:100]}")

    def _post(self, path: str, query: dict[str, list[str]]) -> None:
        if path != "/api/review":
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path[:100]}")
            return
        origin = self.headers.get("Origin")
        if origin and urllib.parse.urlsplit(origin).netloc.lower() not in self.server.hosts:
            self._error(HTTPStatus.FORBIDDEN, "a review must come from the explorer's own page")
            return
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the review as application/json")
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            self._error(HTTPStatus.BAD_REQUEST, "a review's body must be 1 byte to 1 MiB")
            return
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ExploreError("the body is not JSON") from exc
        if not isinstance(body, dict):
            raise ExploreError("the body must be a JSON object")
        written = self.server.explorer.review(body)
        self._json({"recorded": written})


def make_server(
    explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, token: str | None = None
) -> tuple[_Server, str]:
    """A server for `explorer` bound to host:port (0: a free port) and the URL to open.

    `token`: required on every request; made up (random) when the host is not local."""
    if host not in _LOCAL_HOSTS and token is None:
        token = secrets.token_urlsafe(24)
    server = _Server((host, port), _Handler)
    server.explorer = explorer
    server.token = token
    bound_port = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    names = {shown, "127.0.0.1", "localhost", "[::1]"} if host in _LOCAL_HOSTS else {shown}
    if host in ("0.0.0.0", "::"):  # any interface: the Host a browser sends cannot be known
        names = None
    server.hosts = _HostSet(names, bound_port)
    url = f"http://{shown}:{bound_port}/"
    if token:
        url += f"?token={token}"
    return server, url


class _HostSet(set):
    """The Host headers a request may carry: name:port for each name (any, when None)."""

    def __init__(self, names: set[str] | None, port: int):
        super().__init__(f"{name.lower()}:{port}" for name in names or ())
        self.any = names is None

    def __contains__(self, item: object) -> bool:
        return self.any or super().__contains__(item)


def serve(
    lake: str | Path | Lake,
    host: str = "127.0.0.1",
    port: int = 8765,
    timeout: float = 60.0,
    memory_limit: str = "384MB",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the explorer until SIGINT or SIGTERM, then stop within a second or two."""
    explorer = Explorer(lake, timeout=timeout, memory_limit=memory_limit)
    server, url = make_server(explorer, host, port)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    threading.Thread(target=explorer.warm, daemon=True).start()
    try:
        (on_ready or (lambda u: print(u, flush=True)))(url)
        while not stop.wait(0.5):
            pass
    finally:
        explorer.close()  # interrupts running queries first
        server.shutdown()
        server.server_close()
        thread.join(timeout=1.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
