"""Query by example: embed images from outside the lake exactly as the lake's own images were
embedded, and list the nearest images of the lake's current collection.

"Exactly" means the same (backbone, weights_id, precision) group as stored embeddings: the weights
are reloaded from where the run that made them found them (or from `--weights`), and their
fingerprint must equal the lake's `weights_id`, else the query is refused with a one-line error
naming the weights that are needed (`random` lakes always reload: random init is seeded). Query
images go through the run's own decode and crop (`tasks.decode`: EXIF orientation, first frame,
alpha over white, timm's eval resize and centre crop) and the run's forward pass (`tasks.embed`).

Query images get the run's guards and error codes: a local query must be a regular file (a FIFO
or device is refused without being read), it is decoded in a worker process that is killed past
the time limit (`tasks.decode_pool`), under the pixel limit, and a non-image is `not_an_image`
from its header alone. A URL is http(s) or an object store (`s3://`, `gs://`, `az://`, `abfs://`);
it is downloaded within the time limit and up to `MAX_QUERY_BYTES`, and an http(s) URL whose host
resolves to a loopback, private, link-local or otherwise non-global address is refused (redirects
included) unless the caller allows private URLs: the URL may have come from someone else, and a
local tool must not become a way into the network it runs in.

Lake data names nothing that runs: Pillow plugins are the caller's (`--pillow-plugin`), never the
ones a run recorded in `runs.params`. Where the lake's runs used plugins the caller did not name,
the query proceeds (a query in a format Pillow knows decodes the same without them) with a note,
and a query that does not decode says which plugins the run had.

The search is `nearest`'s (`graph.search_group`): through the group's ANN index when it has one,
plus an exact scan of the parts the index does not cover, else an exact scan in blocks with a
running top-k per query (`topk.top_k`), among the current collection's images only. Memory is
bounded by one block or index segment and k, not by the number of images (beyond the map of the
current collection's paths). The lake's tables are read through its read-only catalog; nothing
is written to the lake.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .backbones import resolve_backbone
from .decode import CropPlan
from .discover import DEFAULT_MAX_PIXELS, NotARegularFile, open_regular_file
from .params import RunParams
from .schemas import GroupKey  # lake.GroupKey, without importing the lake module
from .weights import WeightsError, WeightsSource, parse_weights_spec

if TYPE_CHECKING:
    import duckdb

    from .engine import EnginePlan
    from .lake import Lake

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_QUERY_BYTES",
    "RESULT_SCHEMA",
    "ChosenGroup",
    "QueryImageError",
    "SimilarError",
    "SimilarResult",
    "choose_groups",
    "decode_queries",
    "download",
    "find_similar",
    "held_backbones",
    "weights_source_for",
]

RESULT_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("backbone", pa.string()),
        ("rank", pa.int32()),
        ("path", pa.string()),
        ("image_id", pa.string()),
        ("similarity", pa.float32()),
    ]
)

# the run's per-file decode limit; a query gets it for its download, and again for its decode
DEFAULT_TIMEOUT: float = RunParams.model_fields["decode_timeout"].default
# a downloaded query is held in memory (and sent to the decode worker): larger ones are refused
MAX_QUERY_BYTES = 256 << 20
_OBJECT_STORES = ("s3", "gs", "gcs", "az", "abfs", "abfss")
_MAX_REDIRECTS = 5
_CHUNK = 1 << 20


class SimilarError(ValueError):
    """A query that cannot be answered; the message (one line) says why."""


class QueryImageError(SimilarError):
    """A query image that cannot be read or decoded; `code` is one of discover.ERROR_CODES."""

    def __init__(self, location: str, code: str, message: str):
        super().__init__(f"query image {location}: {code}: {message}")
        self.code = code


@dataclass(frozen=True)
class ChosenGroup:
    """The group `choose_groups` picked for a backbone, and the params of the run that made it
    (empty when no finished run did): how the queries are decoded, and what to say about its
    weights."""

    key: GroupKey
    run_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SimilarResult:
    table: pa.Table  # RESULT_SCHEMA
    notes: list[str]  # for the user: what was done differently from the run, and why


def choose_groups(
    stored: Iterable[GroupKey],
    finished_runs: list[dict[str, Any]],
    backbones: list[str] | None = None,
    weights_ids: dict[str, str] | None = None,
) -> list[ChosenGroup]:
    """The group to search per backbone (default: every backbone with stored embeddings).

    `stored`: the lake's (backbone, weights_id, precision) groups. `finished_runs`: newest first,
    each with `params` (dict), `weights` (backbone -> weights_id) and `precision`. A backbone
    takes the weights of the latest finished run that used it, unless `weights_ids` names one;
    a group no finished run made is taken only when it is the backbone's only choice.
    """
    stored = sorted(set(stored))
    chosen = []
    for backbone in held_backbones(stored, backbones):
        options = [g for g in stored if g.backbone == backbone]
        if weights_ids and backbone in weights_ids:
            options = [g for g in options if g.weights_id == weights_ids[backbone]]
            if not options:
                have = ", ".join(sorted({g.weights_id for g in stored if g.backbone == backbone}))
                raise SimilarError(
                    f"the lake holds no {backbone} embeddings made with weights "
                    f"{weights_ids[backbone]} (it holds: {have})"
                )
        for run in finished_runs:
            weights = (run.get("weights") or {}).get(backbone)
            key = GroupKey(backbone, weights, run.get("precision"))
            if key in options:
                chosen.append(ChosenGroup(key, run.get("params") or {}))
                break
        else:
            if len(options) > 1:
                raise SimilarError(
                    f"the lake holds {backbone} embeddings of {len(options)} weights or "
                    f"precisions, none from a finished run: choose with --weights"
                )
            chosen.append(ChosenGroup(options[0]))
    return chosen


def held_backbones(stored: Iterable[GroupKey], backbones: list[str] | None = None) -> list[str]:
    """`backbones` (default: every one with stored embeddings); raises for one the lake lacks."""
    held = sorted({backbone for backbone, _, _ in stored})
    if not held:
        raise SimilarError("the lake holds no embeddings yet: nothing to compare with")
    missing = [b for b in backbones or [] if b not in held]
    if missing:
        raise SimilarError(
            f"the lake holds no {', '.join(missing)} embeddings "
            f"(it holds: {', '.join(held) or 'none'})"
        )
    return list(backbones or held)


def weights_source_for(chosen: ChosenGroup) -> WeightsSource:
    """Where the weights of the chosen group come from, read off its weights_id: seeded random
    weights and timm's pretrained ones are reloaded; a weights file is never opened from the path
    the lake's runs recorded (a lake may name any file of the reader's machine): the caller
    names it."""
    backbone, weights_id, _ = chosen.key
    origin = weights_id.rpartition(":")[0]
    spec = resolve_backbone(backbone)
    if origin.startswith("random-seed"):
        return WeightsSource("random")
    if origin == spec.pretrained_name:
        return WeightsSource("imagenet")
    if origin.startswith("file-"):
        given = str(chosen.run_params.get("weights", ""))
        recorded = f" (its run recorded {given!r})" if given else ""
        raise WeightsError(
            f"the lake's {backbone} embeddings were made with the weights file "
            f"{origin.removeprefix('file-')!r}{recorded}; embedlake opens no path a lake names: "
            f"pass --weights {backbone}=PATH"
        )
    raise WeightsError(
        f"the lake's {backbone} embeddings were made with weights {weights_id!r}, "
        f"whose origin embedlake does not know: pass --weights {backbone}=PATH"
    )


def decode_queries(
    locations: list[str],
    plans: list[CropPlan],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = DEFAULT_TIMEOUT,
    plugins: list[str] | None = None,
    allow_private_urls: bool = False,
) -> list[dict[str, np.ndarray]]:
    """The crops of each query image (a local path or a URL), in order, as a run cuts them.

    Every local query is checked first (a regular file, not empty), without reading it; then each
    is decoded in a worker process that is killed after `timeout` seconds, URLs once `download`
    has fetched their bytes. `plugins` are imported in that worker. Raises QueryImageError, or
    SimilarError for a URL it will not fetch.
    """
    from .decode_pool import DecodeJob, iter_decoded

    local, remote = [], []
    for position, location in enumerate(locations):
        if "://" in location and not location.startswith("file://"):
            _url_scheme(location)  # a URL it will not fetch fails before anything is read
            remote.append(DecodeJob(str(position), location))
        else:
            local.append(DecodeJob(str(position), _local_query(location)))

    def fetch(url: str) -> bytes:
        return download(url, timeout=timeout, allow_private_urls=allow_private_urls)

    crops: dict[int, dict[str, np.ndarray]] = {}
    for jobs, reader in ((local, None), (remote, fetch)):
        if not jobs:
            continue
        # a window of 2: at most two downloaded queries in memory at once
        outcomes = iter_decoded(
            jobs,
            plans,
            workers=1,
            timeout=timeout,
            max_pixels=max_pixels,
            plugins=plugins,
            reader=reader,
            window=2,
        )
        with closing(outcomes):  # the worker is stopped at the first error, not at exit
            for done in outcomes:
                position = int(done.image_id)
                if done.error:
                    raise QueryImageError(locations[position], *done.error)
                crops[position] = done.crops
    return [crops[position] for position in range(len(locations))]


def _local_query(location: str) -> Path:
    """The query's path, once it is known to be a non-empty regular file (nothing is read)."""
    path = Path(location.removeprefix("file://")).expanduser()
    try:
        with open_regular_file(path) as handle:
            size = os.fstat(handle.fileno()).st_size
    except NotARegularFile as exc:  # a FIFO would hang a read, /dev/zero never end
        raise QueryImageError(location, "unreadable", str(exc)) from exc
    except OSError as exc:
        message = f"{type(exc).__name__}: {exc.strerror or exc}"
        raise QueryImageError(location, "unreadable", message) from exc
    if size == 0:
        raise QueryImageError(location, "empty_file", "the file is empty")
    return path


def _url_scheme(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    # `::` chains fsspec filesystems (caches that write, archives, other URLs): none of it here
    if "::" in url or scheme not in ("http", "https", *_OBJECT_STORES):
        allowed = ", ".join(f"{s}://" for s in ("http", "https", *_OBJECT_STORES))
        raise SimilarError(f"query image {url}: only local files and {allowed} URLs are fetched")
    return scheme


def download(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    allow_private_urls: bool = False,
    max_bytes: int = MAX_QUERY_BYTES,
) -> bytes:
    """The bytes behind `url`, read within `timeout` seconds and up to `max_bytes`.

    http(s) goes through `http.client` to an address checked first: one that is not global
    (loopback, private, link-local, ...) is refused unless `allow_private_urls`, for the URL
    and each redirect. Object stores go through fsspec with the caller's own credentials; their
    client's timeouts apply within a chunk. Raises QueryImageError or SimilarError (refused).
    """
    deadline = time.monotonic() + timeout
    if _url_scheme(url) in ("http", "https"):
        return _http_get(url, deadline, timeout, allow_private_urls, max_bytes)
    try:
        import fsspec

        with fsspec.open(url, "rb") as f:
            return _read_capped(url, f.read, deadline, timeout, max_bytes)
    except SimilarError:
        raise
    except Exception as exc:  # fsspec backends raise their own error types for I/O failures
        raise QueryImageError(url, "unreadable", f"{type(exc).__name__}: {exc}") from exc


def _read_capped(url: str, read, deadline: float, timeout: float, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while chunk := read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise QueryImageError(url, "unreadable", f"larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise _timed_out(url, timeout)
        chunks.append(chunk)
    if time.monotonic() >= deadline:  # the watchdog cut the answer short: it is not all there
        raise _timed_out(url, timeout)
    return b"".join(chunks)


def _timed_out(url: str, timeout: float) -> QueryImageError:
    return QueryImageError(url, "timeout", f"not downloaded within {timeout:g} s")


def _http_get(
    url: str, deadline: float, timeout: float, allow_private: bool, max_bytes: int
) -> bytes:
    location = url
    for _ in range(_MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SimilarError(f"query image {url}: redirected to {location}, not an http(s) URL")
        kind = _TLSConnection if parts.scheme == "https" else _Connection
        remaining = max(deadline - time.monotonic(), 0.001)
        connection = kind(parts.hostname, parts.port, remaining, allow_private, url)
        # socket timeouts bound each wait; the watchdog bounds a server that answers drop by drop
        watchdog = threading.Timer(remaining, connection.cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            connection.request("GET", target, headers={"Accept-Encoding": "identity"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                location = urllib.parse.urljoin(location, response.getheader("Location"))
                continue
            if response.status != 200:
                raise QueryImageError(
                    url, "unreadable", f"HTTP {response.status} {response.reason}"
                )
            length = response.getheader("Content-Length") or ""
            if length.isdigit() and int(length) > max_bytes:
                raise QueryImageError(url, "unreadable", f"larger than {max_bytes} bytes")
            return _read_capped(url, response.read, deadline, timeout, max_bytes)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
                raise _timed_out(url, timeout) from exc
            raise QueryImageError(url, "unreadable", f"{type(exc).__name__}: {exc}") from exc
        finally:
            watchdog.cancel()
            connection.close()
    raise QueryImageError(url, "unreadable", f"more than {_MAX_REDIRECTS} redirects")


class _Connection(http.client.HTTPConnection):
    """HTTP to an address of the host checked before connecting (resolved once, so a name
    cannot resolve to a public address for the check and a private one for the connection)."""

    def __init__(self, host: str, port: int | None, timeout: float, allow_private: bool, url: str):
        super().__init__(host, port, timeout=timeout)
        self._allow_private, self._url = allow_private, url

    def connect(self) -> None:
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        for *_, (address, *_) in infos:
            if not (self._allow_private or _is_global(address)):
                where = self.host if self.host == address else f"{self.host} ({address})"
                raise SimilarError(
                    f"query image {self._url}: {where} is not a public address (loopback, "
                    "private, link-local, ...): pass --allow-private-urls to fetch from it"
                )
        error: OSError = OSError(f"no address for {self.host}")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.timeout)
            try:
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            self.sock = sock
            return
        raise error

    def cut(self) -> None:
        """End a read that is blocked in another thread (the deadline passed)."""
        if self.sock is not None:
            with suppress(OSError):  # already closed
                self.sock.shutdown(socket.SHUT_RDWR)


class _TLSConnection(_Connection):
    default_port = 443

    def connect(self) -> None:
        super().connect()
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


def _is_global(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 scope (%eth0) is no part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _finished_runs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    from .catalog import sql_text

    rows = con.execute(sql_text("search", "finished_runs.sql")).fetchall()
    return [
        {"params": json.loads(p or "{}"), "weights": json.loads(w or "{}"), "precision": prec}
        for p, w, prec in rows
    ]


def find_similar(
    lake: str | Path,
    queries: list[str],
    *,
    backbones: list[str] | None = None,
    k: int = 10,
    weights: str | None = None,
    device: str = "auto",
    pillow_plugins: list[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = DEFAULT_TIMEOUT,
    allow_private_urls: bool = False,
) -> SimilarResult:
    """The k nearest images of the lake's current collection to each query image, per backbone.

    Raises SimilarError or WeightsError (one-line messages) for a query image that cannot be
    read or decoded, a backbone the lake does not hold, or weights that cannot be had or do not
    reproduce the lake's weights_id. Reads the lake's tables through its read-only catalog and
    its embeddings and index as `nearest` does; writes nothing. The query limits and plugins
    are the caller's (`decode_queries`), never the lake's.
    """
    from .catalog import connect_read_only, sql_text
    from .engine import plan_query
    from .graph import group_keys
    from .lake import Lake
    from .weights import load_backbone

    if k < 1:
        raise SimilarError("k must be at least 1")
    root = Lake.at(lake)
    names = [resolve_backbone(name).name for name in backbones] if backbones else None
    notes: list[str] = []
    with connect_read_only(root) as con:
        stored, runs = group_keys(root), _finished_runs(con)
        loaded = {}
        if weights is not None:  # --weights picks among the lake's weights for each backbone
            names = held_backbones(stored, names)
            for name, source in parse_weights_spec(weights, names).items():
                loaded[name] = load_backbone(resolve_backbone(name), source)
        groups = choose_groups(
            stored, runs, names, {n: b.weights_id for n, b in loaded.items()} or None
        )
        fallback = runs[0]["params"] if runs else {}
        missing = _plugins_not_loaded(groups, fallback, pillow_plugins or [])
        limits = dict(
            max_pixels=max_pixels,
            timeout=timeout,
            plugins=pillow_plugins,
            allow_private_urls=allow_private_urls,
        )
        try:  # every query decoded before any weights load: a broken one fails fast
            crops = _decode_queries(queries, groups, fallback, limits)
        except QueryImageError as exc:
            if missing and exc.code in ("not_an_image", "unsupported_format"):
                raise SimilarError(f"{exc}; {_plugins_note(missing)}") from exc
            raise
        if missing:
            notes.append(f"{_plugins_note(missing)} (the queries decoded without them)")
        paths = dict(con.execute(sql_text("search", "current_paths.sql")).fetchall())
    found = {}
    for chosen in groups:  # one engine plan per group: the device, at the group's precision
        engine, note = plan_query(device, chosen.key.precision)
        notes.extend([note] if note else [])
        vectors = _embed_group(chosen, loaded, crops, engine)
        found[chosen.key.backbone] = _search(root, chosen.key, vectors, k, paths, engine.device)
    rows = [
        {
            "query": query,
            "backbone": chosen.key.backbone,
            "rank": rank,
            "path": paths[image_id],
            "image_id": image_id,
            "similarity": similarity,
        }
        for position, query in enumerate(queries)
        for chosen in groups
        for rank, (image_id, similarity) in enumerate(found[chosen.key.backbone][position], start=1)
    ]
    return SimilarResult(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), notes)


def _search(
    root: Lake, key: GroupKey, vectors: np.ndarray, k: int, paths: dict[str, str], device: str
) -> list[list[tuple[str, float]]]:
    """Per query vector, its k nearest (image_id, similarity) in the group, among the lake's
    current collection only (an image no longer in it is not an answer)."""
    from .graph import search_group

    ids, sims, _ = search_group(root, key, vectors, k, among=paths, device=device)
    return [
        [(image_id, float(s)) for image_id, s in zip(row, row_s, strict=True) if image_id]
        for row, row_s in zip(ids, sims, strict=True)
    ]


def _embed_group(
    chosen: ChosenGroup,
    loaded: dict[str, Any],
    crops: dict[str, list[np.ndarray]],
    engine: EnginePlan,
) -> np.ndarray:
    """The queries' vectors in the chosen group: its weights (refused unless they reproduce its
    weights_id), on the engine plan's device at its precision (`engine.plan_query`)."""
    from .embed import Embedder
    from .weights import load_backbone

    group = chosen.key
    spec = resolve_backbone(group.backbone)
    backbone = loaded.get(spec.name) or load_backbone(spec, weights_source_for(chosen))
    if backbone.weights_id != group.weights_id:
        raise WeightsError(
            f"the lake's {group.backbone} embeddings were made with weights "
            f"{group.weights_id}, but {backbone.source.kind} weights give "
            f"{backbone.weights_id}: pass --weights with the weights that made them"
        )
    embedder = Embedder([backbone], engine.device, engine.precision)
    return _embed_queries(embedder, spec.name, crops[spec.name], engine.batch_size)


def _decode_queries(
    queries: list[str], groups: list[ChosenGroup], fallback: dict[str, Any], limits: dict[str, Any]
) -> dict[str, list[np.ndarray]]:
    """Per backbone, each query's crop, cut as the run that made its group cut its images: with
    the crop plans of all its backbones (a large JPEG's reduced decode depends on the largest
    resize among them). `limits`: `decode_queries`'s keyword arguments."""
    from .decode import crop_plans

    decoded: dict[tuple[str, ...], list[dict[str, np.ndarray]]] = {}
    out = {}
    for chosen in groups:
        backbone = chosen.key.backbone
        params = chosen.run_params or fallback
        names = tuple(sorted({*(params.get("backbones") or []), backbone}))
        if names not in decoded:
            plans = crop_plans({n: resolve_backbone(n).data_config() for n in names})
            decoded[names] = decode_queries(queries, plans, **limits)
        out[backbone] = [crops[backbone] for crops in decoded[names]]
    return out


def _plugins_not_loaded(
    groups: list[ChosenGroup], fallback: dict[str, Any], plugins: list[str]
) -> list[str]:
    """The Pillow plugins the groups' runs recorded that the caller did not name."""
    used: set[str] = set()
    for chosen in groups:
        recorded = (chosen.run_params or fallback).get("pillow_plugins")
        if isinstance(recorded, list):
            used.update(str(name) for name in recorded)
    return sorted(used - set(plugins))


def _plugins_note(missing: list[str]) -> str:
    # repr: the names are lake data, shown as text (no terminal escapes)
    names = ", ".join(repr(name) for name in missing)
    return (
        f"the lake's runs used the Pillow plugins {names}, which are never loaded from lake "
        "data: pass --pillow-plugin NAME for each one you trust"
    )


def _embed_queries(
    embedder: Any, name: str, crops: list[np.ndarray], batch_size: int
) -> np.ndarray:
    import torch

    out = []
    for start in range(0, len(crops), batch_size):
        batch = np.stack(crops[start : start + batch_size])
        embeddings, _ = embedder.embed({name: torch.from_numpy(batch)})
        out.append(embeddings[name])
    return np.concatenate(out)
