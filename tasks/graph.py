"""The maintained neighbour graph: each image's top-k per (backbone, weights_id, precision) group.

The graph is updated, not rebuilt. Adding M images to a group of N costs:
- exact mode (N + M <= `ann_threshold`): O(M * N). The M new vectors are the queries of one blocked
  scan over the group's stored vectors; the same M x N product, read column-wise, gives each
  existing image its best new candidates, which replace the tail of its list when they beat its
  current k-th similarity. The result equals a full rebuild (ties aside).
- ANN mode (larger groups): an insert into the group's faiss index in the lake (`ann_index`: IVF-SQ8
  segments, searched one mapped file at a time), then the new images' searches; an existing image
  whose list a new one enters gets it merged in.

Each update writes parts `neighbors/<group>-<version>.parquet`, holding the complete lists of the
images whose lists changed; the `neighbors` view keeps, per image, the latest version's list.
`update_group(..., rebuild=True)` (the `reindex` command) recomputes a group from its Parquet
and drops its older parts.
Vectors are read in blocks (one Parquet batch at a time), never a table whole.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from . import lake, topk
from .ann_index import GroupIndex, check_group_name, remove_index
from .lake import GroupKey

__all__ = [
    "ANN_METHOD",
    "delete_lists_part",
    "embedding_part_names",
    "group_ids",
    "group_keys",
    "group_name",
    "group_size",
    "iter_group_blocks",
    "open_index",
    "Searcher",
    "search_group",
    "search_here",
    "update_group",
]

ANN_METHOD = "faiss_ivf_sq8"
_PART = re.compile(r"^(?P<group>.+)-(?P<version>\d{8})\.parquet$")
_log = logging.getLogger("embedlake")


def group_name(backbone: str, weights_id: str, precision: str) -> str:
    """The group's name in part and folder names; a key read from a crafted lake that would not
    make one safe file name (a precision of `../x`) is refused."""
    digest = hashlib.sha256(f"{backbone}|{weights_id}|{precision}".encode()).hexdigest()[:12]
    return check_group_name(f"{backbone}-{precision}-{digest}")


# ---------------------------------------------------------------- reading the embeddings in blocks


def embedding_part_names(root: lake.Lake) -> list[str]:
    """The embedding parts' names, sorted: a listing, no footer read."""
    return [name for name in root.part_names("embeddings") if name != lake.SCHEMA_PART]


def _embedding_parts(
    root: lake.Lake, names: list[str] | None = None
) -> list[tuple[str, ds.Dataset]]:
    """(name, dataset) of each embedding part (of `names` alone when given), in name order."""
    # one dataset per part: a part's schema is read from its own footer
    if names is None:
        names = embedding_part_names(root)
    return [
        (
            name,
            ds.dataset(
                root._part_path("embeddings", name),
                format="parquet",
                filesystem=root._arrow_filesystem(),
            ),
        )
        for name in sorted(names)
    ]


def _group_filter(key: GroupKey) -> ds.Expression:
    backbone, weights_id, precision = key
    return (
        (ds.field("backbone") == backbone)
        & (ds.field("weights_id") == weights_id)
        & (ds.field("precision") == precision)
    )


def group_keys(root: lake.Lake) -> list[GroupKey]:
    """The (backbone, weights_id, precision) groups the embeddings hold, sorted."""
    keys: set[GroupKey] = set()
    for _, part in _embedding_parts(root):
        table = part.to_table(columns=["backbone", "weights_id", "precision"])
        for row in table.group_by(table.column_names).aggregate([]).to_pylist():
            keys.add(GroupKey(**row))
    return sorted(keys)


def group_ids(root: lake.Lake, key: GroupKey) -> pa.Array:
    """The group's distinct image_ids in storage order (first occurrence), ids column alone."""
    chunks = [
        part.to_table(columns=["image_id"], filter=_group_filter(key)).column("image_id")
        for _, part in _embedding_parts(root)
    ]
    if not chunks:
        return pa.array([], pa.string())
    ids = pa.chunked_array([c for chunk in chunks for c in chunk.chunks], pa.string())
    return ids.unique() if len(ids) else pa.array([], pa.string())


def group_size(root: lake.Lake, key: GroupKey) -> int:
    """How many rows the group has (its key columns alone are read)."""
    return sum(part.count_rows(filter=_group_filter(key)) for _, part in _embedding_parts(root))


def iter_group_blocks(
    root: lake.Lake,
    key: GroupKey,
    only: pa.Array | None = None,
    block_rows: int = 8192,
    parts: list[str] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image_ids, float32 vectors) of the group's rows, in blocks of at most `block_rows`.

    Each id comes once (the first stored row wins); `only` restricts the rows to those ids,
    `parts` to those embedding parts.
    """
    where = _group_filter(key)
    if only is not None and len(only):
        # the ids' range too: a sorted part's row groups outside it are skipped on their
        # statistics (isin alone reads every row group)
        low, high = (value.as_py() for value in pc.min_max(only).values())
        image_id = ds.field("image_id")
        where = where & image_id.isin(only) & (image_id >= low) & (image_id <= high)
    elif only is not None:
        return
    seen: set[str] = set()
    for _, part in _embedding_parts(root, parts):
        scanner = part.scanner(
            columns=["image_id", "embedding"], filter=where, batch_size=block_rows
        )
        for batch in scanner.to_batches():
            if not batch.num_rows:
                continue
            ids = np.asarray(batch.column("image_id").to_pylist(), dtype=object)
            keep = np.fromiter((i not in seen for i in ids), bool, len(ids))
            _, first = np.unique(ids, return_index=True)
            unique_in_block = np.zeros(len(ids), bool)
            unique_in_block[first] = True
            keep &= unique_in_block
            if not keep.any():
                continue
            seen.update(ids[keep])
            vectors = lake.vectors_of(pa.Table.from_batches([batch]))
            yield ids[keep], np.ascontiguousarray(vectors[keep], dtype=np.float32)


def group_vectors(root: lake.Lake, key: GroupKey, only: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids sorted, their float32 vectors) of the group's rows among `only` ids."""
    blocks = list(iter_group_blocks(root, key, only=only))
    if not blocks:
        return np.empty(0, object), np.empty((0, 0), np.float32)
    ids = np.concatenate([block_ids for block_ids, _ in blocks])
    order = np.argsort(ids)
    return ids[order], np.concatenate([vectors for _, vectors in blocks])[order]


def graph_edges(root: lake.Lake, key: GroupKey, k: int) -> list[tuple[str, str, int]]:
    """(image_id, neighbor_id, rank) of the group's current lists (rank 1 = the nearest)."""
    lists = read_lists(root, key, k)
    return [
        (image_id, neighbor, rank)
        for image_id, row in zip(lists.ids, lists.neighbors, strict=True)
        for rank, neighbor in enumerate(row, start=1)
        if neighbor is not None
    ]


# ------------------------------------------------------------------------ the graph's parts


@dataclass
class Lists:
    """Ranked neighbour lists, one row per image: ids (n,), neighbours (n, k), sims (n, k).

    Short lists are padded with None / -inf.
    """

    ids: np.ndarray
    neighbors: np.ndarray
    sims: np.ndarray

    @staticmethod
    def empty(k: int) -> Lists:
        return Lists(np.empty(0, object), np.empty((0, k), object), np.empty((0, k), np.float32))


def _group_parts(root: lake.Lake, name: str) -> list[tuple[int, str]]:
    """(version, part name) of the group's neighbour parts, oldest first (a legacy part: 0)."""
    found = []
    for part in root.part_names("neighbors"):
        match = _PART.match(part)
        if match and match["group"] == name:
            found.append((int(match["version"]), part))
        elif part == f"{name}.parquet":  # written by embedlake before the graph was maintained
            found.append((0, part))
    return sorted(found)


def read_lists(root: lake.Lake, key: GroupKey, k: int, only: pa.Array | None = None) -> Lists:
    """The group's current lists (latest version per image), optionally of `only` those ids."""
    import duckdb

    parts = _group_parts(root, group_name(*key))
    if not parts:
        return Lists.empty(k)
    # spilling (a full read at 10 M) to a folder of its own: DuckDB's default is ./.tmp
    with (
        tempfile.TemporaryDirectory(prefix="embedlake-lists-") as spill,
        duckdb.connect(config={"memory_limit": "2GB", "temp_directory": spill}) as con,
    ):
        latest = _latest_lists(con, root, parts, only)
    n = latest.num_rows
    neighbors = np.full((n, k), None, object)
    sims = np.full((n, k), -np.inf, np.float32)
    for row, (nb, sim) in enumerate(
        zip(latest["nb"].to_pylist(), latest["sim"].to_pylist(), strict=True)
    ):
        neighbors[row, : len(nb[:k])] = nb[:k]
        sims[row, : len(sim[:k])] = sim[:k]
    return Lists(np.asarray(latest["image_id"].to_pylist(), object), neighbors, sims)


def _latest_lists(
    con: Any, root: lake.Lake, parts: list[tuple[int, str]], only: pa.Array | None
) -> pa.Table:
    """latest_lists.sql over the parts' rows (of `only` those ids), read by list_rows.sql."""
    from .catalog import sql_text

    base = root.register(con)
    con.register(
        "part_versions",
        pa.table(
            {
                "part": pa.array([part for _, part in parts], pa.string()),
                "version": pa.array([version for version, _ in parts], pa.int32()),
            }
        ),
    )
    wanted = pa.array([], pa.string()) if only is None else only.cast(pa.string())
    con.register("wanted", pa.table({"image_id": wanted}))
    # a table, not a view: the statement's parameters are bound once
    con.execute(
        f"CREATE TEMP TABLE parts AS {sql_text('search', 'list_rows.sql')}",
        {"files": [f"{base}/neighbors/{part}" for _, part in parts], "all": only is None},
    )
    return con.sql(sql_text("search", "latest_lists.sql")).to_arrow_table()


def _write_lists(root: lake.Lake, key: GroupKey, lists: Lists, method: str) -> str | None:
    """Write the changed lists as the group's next part; its name (None when nothing changed)."""
    if not len(lists.ids):
        return None
    # sorted by image_id: a part's row groups then carry narrow min/max, which point lookups
    # (`neighbors WHERE image_id = ...`) skip by
    order = np.argsort(lists.ids)
    lists = Lists(lists.ids[order], lists.neighbors[order], lists.sims[order])
    n, k = lists.neighbors.shape
    valid = lists.neighbors.reshape(-1) != None  # noqa: E711 (element-wise)
    backbone, weights_id, precision = key
    name = group_name(*key)
    parts = _group_parts(root, name)
    version = parts[-1][0] + 1 if parts else 1
    rows = pa.table(
        {
            "backbone": pa.array([backbone] * (n * k), pa.string()),
            "weights_id": pa.array([weights_id] * (n * k), pa.string()),
            "precision": pa.array([precision] * (n * k), pa.string()),
            "image_id": pa.array(np.repeat(lists.ids, k), pa.string()),
            "neighbor_id": pa.array(lists.neighbors.reshape(-1), pa.string()),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int16), n)),
            "similarity": pa.array(lists.sims.reshape(-1).astype(np.float32)),
            "method": pa.array([method] * (n * k), pa.string()),
            "version": pa.array(np.full(n * k, version, np.int32)),
        },
        schema=lake.NEIGHBORS_SCHEMA,
    ).filter(pa.array(valid))
    part = f"{name}-{version:08d}.parquet"
    # the lists' scores first: one whose neighbours part is missing (an update killed between
    # the two writes; the next update writes that version again) is left out by
    # `list_score_versions`, which takes a neighbours part with its `version` to have its scores
    root.write_part(_list_scores(key, lists, method), "list_scores", part)
    root.write_part(rows, "neighbors", part)
    return part


def _list_scores(key: GroupKey, lists: Lists, method: str) -> pa.Table:
    """One row per non-empty list: its similarity sum (float64, as DuckDB sums the rows), its
    length, its best similarity, and its rows at or above `lake.CLOSE_FLOOR`."""
    valid = lists.neighbors != None  # noqa: E711 (element-wise)
    n = valid.sum(1)
    keep = n > 0
    valid = valid[keep]
    sims = np.where(valid, lists.sims[keep], -np.inf)
    close = valid & (sims >= np.float32(lake.CLOSE_FLOOR))
    rows, ranks = np.nonzero(close)  # row-major: each list's close rows in rank order
    rows_close = pa.StructArray.from_arrays(
        [
            pa.array(lists.neighbors[keep][rows, ranks], pa.string()),
            pa.array((ranks + 1).astype(np.int16)),
            pa.array(sims[rows, ranks].astype(np.float32)),
        ],
        fields=list(lake.CLOSE_ROW),
    )
    offsets = np.concatenate([[0], np.cumsum(close.sum(1))]).astype(np.int32)
    m = int(keep.sum())
    return pa.table(
        {
            "backbone": pa.array([key.backbone] * m, pa.string()),
            "weights_id": pa.array([key.weights_id] * m, pa.string()),
            "precision": pa.array([key.precision] * m, pa.string()),
            "image_id": pa.array(lists.ids[keep], pa.string()),
            "similarity_sum": pa.array(np.where(valid, sims, 0).astype(np.float64).sum(1)),
            "n": pa.array(n[keep].astype(np.int16)),
            "max_similarity": pa.array(sims.max(1, initial=-np.inf).astype(np.float32)),
            "method": pa.array([method] * m, pa.string()),
            "close": pa.ListArray.from_arrays(pa.array(offsets), rows_close),
        },
        schema=lake.LIST_SCORES_SCHEMA,
    )


def delete_lists_part(root: lake.Lake, part: str) -> None:
    """Remove a neighbours part, then its scores (a scores part left alone is left out; a
    neighbours part with its `version` but no scores would lose its lists' scores)."""
    root.delete_part("neighbors", part)
    root.delete_part("list_scores", part)


# ------------------------------------------------------------------------------- exact mode


def _exact_update(
    root: lake.Lake,
    key: GroupKey,
    current: Lists,
    new_ids: np.ndarray,
    k: int,
    device: str,
    query_block: int,
    key_block: int,
) -> Lists:
    """The lists that change when `new_ids` join the group: theirs, and those they enter."""
    position = {image_id: i for i, image_id in enumerate(current.ids)}
    # each existing image's best candidates among the new ones (as indexes into new_ids)
    cand_s = np.full((len(current.ids), k), -np.inf, np.float32)
    cand_i = np.full((len(current.ids), k), -1, np.int64)
    new_nb = np.full((len(new_ids), k), None, object)
    new_s = np.full((len(new_ids), k), -np.inf, np.float32)
    new_pos = {image_id: i for i, image_id in enumerate(new_ids)}
    for q0 in range(0, len(new_ids), query_block):
        chunk = new_ids[q0 : q0 + query_block]
        offer = partial(
            _offer_to_existing,
            position=position,
            q0=q0,
            k=k,
            cand_s=cand_s,
            cand_i=cand_i,
        )
        new_nb[q0 : q0 + len(chunk)], new_s[q0 : q0 + len(chunk)] = topk.top_k(
            _gather(root, key, pa.array(chunk, pa.string()), new_pos, q0),
            iter_group_blocks(root, key, block_rows=key_block),
            k,
            query_ids=chunk,
            device=device,
            each_block=offer,
        )
        # Arrow's allocator keeps what each chunk's reads freed; given back, the peak follows
        # one chunk (tests/slow: with the top-k below, peak +90 MB from 2,000 to 20,000 images)
        pa.default_memory_pool().release_unused()
    # existing images whose list a new image enters: merge, keep the top k
    kth = current.sims[:, -1] if k else np.empty(0, np.float32)
    changed = cand_s[:, 0] > kth
    cand_nb = np.where(cand_i[changed] >= 0, new_ids[np.clip(cand_i[changed], 0, None)], None)
    nb, s = topk.merge(
        current.neighbors[changed], current.sims[changed], cand_nb, cand_s[changed], k
    )
    return Lists(
        np.concatenate([current.ids[changed], new_ids]),
        np.concatenate([nb, new_nb]),
        np.concatenate([s, new_s]),
    )


def _gather(
    root: lake.Lake, key: GroupKey, chunk: pa.Array, new_pos: dict[str, int], q0: int
) -> np.ndarray:
    """The vectors of `chunk`'s ids, in new_ids order (rows q0, q0 + 1, ...)."""
    out = None
    for ids, vectors in iter_group_blocks(root, key, only=chunk):
        if out is None:
            out = np.empty((len(chunk), vectors.shape[1]), np.float32)
        out[[new_pos[i] - q0 for i in ids]] = vectors
    assert out is not None
    return out


def _offer_to_existing(
    scores,
    ids: np.ndarray,
    *,
    position: dict[str, int],
    q0: int,
    k: int,
    cand_s: np.ndarray,
    cand_i: np.ndarray,
) -> None:
    """Merge each existing image of this block's best new candidates (the block's scores read
    column-wise) into its running top-k."""
    import torch

    existing = np.array([position.get(i, -1) for i in ids], np.int64)
    cols = np.flatnonzero(existing >= 0)  # new images are not in `position`
    if not len(cols) or not k:
        return
    column_scores = scores[:, torch.from_numpy(cols).to(scores.device)].T  # (existing, queries)
    s, i = topk.top_of_scores(column_scores, min(k, column_scores.shape[1]))
    rows = existing[cols]
    cand_i[rows], cand_s[rows] = topk.merge(cand_i[rows], cand_s[rows], i + q0, s, k)


# --------------------------------------------------------------------------------- ANN mode


def _covered_by(root: lake.Lake, key: GroupKey) -> Callable[[set[str]], list[str]]:
    """For converting an old index: the parts whose rows of `key` are all among given ids."""

    def covered(ids: set[str]) -> list[str]:
        names = []
        for name, part in _embedding_parts(root):
            table = part.to_table(columns=["image_id"], filter=_group_filter(key))
            if set(table.column("image_id").to_pylist()) <= ids:
                names.append(name)
        return names

    return covered


def _new_index(root: lake.Lake, key: GroupKey, n: int) -> GroupIndex:
    """A trained, empty index for the group's n rows (a uniform sample of them trains it)."""
    want = GroupIndex.train_rows(n)
    rng = np.random.default_rng(0)
    sample = [
        vectors[rng.random(len(vectors)) < want / n]
        for _, vectors in iter_group_blocks(root, key, block_rows=65_536)
    ]
    return GroupIndex.create(root, group_name(*key), n, np.concatenate(sample))


# (index, blocks of (image_ids, vectors), k) -> each block's (image_ids, similarities, neighbours)
Searcher = Callable[
    [GroupIndex, Iterable[tuple[np.ndarray, np.ndarray]], int],
    Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
]


def search_here(
    index: GroupIndex, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each block's lists, searched in this process (`index_shards.RaySearch`: on a cluster)."""
    for ids, vectors in blocks:
        sims, names = index.search(vectors, k, query_ids=ids)
        yield ids, sims, names


def _ann_update(
    root: lake.Lake,
    key: GroupKey,
    index: GroupIndex,
    k: int,
    block_rows: int,
    search: Searcher = search_here,
) -> int:
    """Index the rows of the parts the index does not cover, then find their lists and merge
    them into the lists they enter; lists written.

    Two passes over the new rows (insert all, then search), each a block at a time; each block's
    lists are written as they come, in block order whoever searched them. When the index held
    nothing before (a new or rebuilt index) every row is new and no existing list is read.
    """
    covered = set(index.manifest.parts)
    new_parts = [name for name in embedding_part_names(root) if name not in covered]
    all_new = index.ntotal == 0
    if not index.add(iter_group_blocks(root, key, parts=new_parts), new_parts):
        index.commit()  # the parts are covered: they hold no row of this group
        return 0
    written = 0
    added: set[str] = set()
    hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (existing, sim, new) per block
    blocks = iter_group_blocks(root, key, parts=new_parts, block_rows=block_rows)
    for ids, sims, names in search(index, blocks, k):
        _write_lists(root, key, Lists(ids, names, sims), ANN_METHOD)
        written += len(ids)
        if not all_new:
            added.update(ids)
            found = names != None  # noqa: E711 (element-wise)
            rows = np.nonzero(found)[0]
            hits.append((names[found], sims[found], ids[rows]))
    if hits:
        written += _enter_existing(root, key, hits, added, k)
    index.compact()
    index.commit()
    return written


def _enter_existing(
    root: lake.Lake,
    key: GroupKey,
    hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    added: set[str],
    k: int,
) -> int:
    """Merge each new image into the lists of the existing images it was found near."""
    existing_hits: dict[str, list[tuple[float, str]]] = {}
    for nbs, sims, new_ids in hits:
        for nb, s, new_id in zip(nbs, sims, new_ids, strict=True):
            if nb not in added:
                existing_hits.setdefault(nb, []).append((float(s), new_id))
    current = read_lists(root, key, k, only=pa.array(list(existing_hits), pa.string()))
    cand_nb = np.full((len(current.ids), k), None, object)
    cand_s = np.full((len(current.ids), k), -np.inf, np.float32)
    for r, image_id in enumerate(current.ids):
        best = sorted(existing_hits[image_id], reverse=True)[:k]
        cand_s[r, : len(best)] = [h[0] for h in best]
        cand_nb[r, : len(best)] = [h[1] for h in best]
    changed = cand_s[:, 0] > current.sims[:, -1]
    nb, s = topk.merge(
        current.neighbors[changed], current.sims[changed], cand_nb[changed], cand_s[changed], k
    )
    _write_lists(root, key, Lists(current.ids[changed], nb, s), ANN_METHOD)
    return int(changed.sum())


# ------------------------------------------------------------------------------ entry points


def _have_faiss(n: int, threshold: int) -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        _log.warning(
            "%d images exceed the ANN threshold %d but faiss is not installed (pip install "
            "'embedlake[ann]'): updating the exact graph instead (bounded memory, slower); "
            "neighbors.method says which was used",
            n,
            threshold,
        )
        return False
    return True


def open_index(root: lake.Lake, key: GroupKey, convert: bool = True) -> GroupIndex | None:
    """The group's ANN index, or None. An index of embedlake 0.2 is converted, unless not
    `convert` (a reader, which writes nothing: it then gets None)."""
    covered = _covered_by(root, key) if convert else None
    return GroupIndex.open(root, group_name(*key), covered=covered)


def search_group(
    root: lake.Lake,
    key: GroupKey,
    queries: np.ndarray,
    k: int,
    *,
    query_ids: np.ndarray | None = None,
    among: Container[str] | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, str]:
    """(ids, similarities, method) of each query's k nearest rows of the group, ranked as
    `topk.top_k` ranks them; `query_ids` and `among` as `GroupIndex.search` takes them.

    Through the group's ANN index when it has one, plus an exact scan of the embedding parts the
    index does not cover yet (a run whose graph update did not happen: normally none); an exact
    scan of every part otherwise. Writes nothing (an old index is not converted).
    """
    index = open_index(root, key, convert=False)
    if index is None:
        start, parts, method = None, None, "exact"
    else:
        sims, ids = index.search(queries, k, query_ids=query_ids, among=among)
        covered = set(index.manifest.parts)
        parts = [name for name in embedding_part_names(root) if name not in covered]
        if not parts:  # nothing to scan: torch is not even imported
            return ids, sims, ANN_METHOD
        start, method = (ids, sims), f"{ANN_METHOD} + exact (parts not indexed yet)"
    blocks = iter_group_blocks(root, key, parts=parts)
    if among is not None:
        blocks = _among(blocks, among)
    ids, sims = topk.top_k(queries, blocks, k, query_ids=query_ids, start=start, device=device)
    return ids, sims, method


def _among(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], among: Container[str]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ids, vectors in blocks:
        keep = np.fromiter((image_id in among for image_id in ids), bool, len(ids))
        if keep.any():
            yield ids[keep], vectors[keep]


def update_group(
    root: lake.Lake,
    key: GroupKey,
    k: int = 10,
    device: str = "cpu",
    ann_threshold: int = 200_000,
    query_block: int = 2048,
    key_block: int = 8192,
    rebuild: bool = False,
    search: Searcher = search_here,
) -> int:
    """Bring one group's graph up to date with its stored embeddings; lists written.

    `rebuild`: start from nothing (a new index, every list recomputed), then drop older parts.
    A group that has an index stays in ANN mode; one without gets an index when it outgrows
    `ann_threshold`. `search`: who runs an ANN update's searches (the exact mode's scan runs
    here, on `device`).
    """
    name = group_name(*key)
    old_parts = [part for _, part in _group_parts(root, name)] if rebuild else []
    if rebuild:
        remove_index(root, name)
    n = group_size(root, key)
    k = min(k, max(n - 1, 0))
    index = None if rebuild or not k else open_index(root, key)
    if index is None and k and n > ann_threshold and _have_faiss(n, ann_threshold):
        index = _new_index(root, key, n)
    if index is not None:
        written = _ann_update(root, key, index, k, block_rows=65_536, search=search)
    else:
        written = 0
        current = Lists.empty(k) if rebuild else read_lists(root, key, k)
        ids = group_ids(root, key)
        have = pa.array(current.ids, pa.string())
        new_ids = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=have)))
        if len(new_ids) and k:
            new = np.asarray(new_ids.to_pylist(), object)
            lists = _exact_update(root, key, current, new, k, device, query_block, key_block)
            _write_lists(root, key, lists, "exact")
            written = len(lists.ids)
    for old in old_parts:
        delete_lists_part(root, old)
    _log.info("neighbour graph %s: %d lists written", key.backbone, written)
    return written
