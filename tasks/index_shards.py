"""The ANN searches of a graph update or a reindex, sharded across a Ray cluster's workers.

The driver reads the group's new vectors block by block, as the single-process path does (the
same order, the same first stored row per image), cuts each block into shards of `shard_rows`
queries and hands them to the cluster. A worker opens the index from the lake
(`GroupIndex.from_view`: the driver's manifest, its pending segments included; a URL lake's
files fetched to that node once) and maps its segments one at a time, as a search here does, so
a worker's memory follows a segment, not the collection. The driver takes the shards back in
order: the lists written, and the existing lists the new images enter, are the single-process
path's. The next block's shards are sent before a block's are awaited, so the workers do not
wait on the driver's reading.

Inserting into the index (one trained index, segments appended in order) and the exact mode's
scan stay in the driver's process.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .ann_index import GroupIndex

__all__ = ["RaySearch", "ray_connection"]

SHARD_ROWS = 4096  # queries per worker task: ~7 s of one core at 1 M (1.7 ms a query)
_log = logging.getLogger("embedlake")


def _search_shard(view: dict, vectors: np.ndarray, ids: np.ndarray, k: int):
    """(similarities, neighbour ids) of one shard's queries, on a worker."""
    return GroupIndex.from_view(view).search(vectors, k, query_ids=ids)


class RaySearch:
    """A `graph.Searcher` whose searches run as Ray tasks on the connected cluster (one CPU
    each). Ray must be initialised (`ray_connection`, or a run's Ray task runner)."""

    def __init__(self, shard_rows: int = SHARD_ROWS):
        if shard_rows < 1:
            raise ValueError("shard_rows must be at least 1")
        self.shard_rows = shard_rows
        self.shards = 0  # tasks sent, for the log and the tests

    def __call__(
        self, index: GroupIndex, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("the sharded search needs a Ray connection (ray_connection)")
        task = ray.remote(num_cpus=1, max_retries=2)(_search_shard)
        view = ray.put(index.view())
        waiting: deque[tuple[np.ndarray, list]] = deque()
        for ids, vectors in blocks:
            cuts = [slice(at, at + self.shard_rows) for at in range(0, len(ids), self.shard_rows)]
            shards = [task.remote(view, vectors[cut], ids[cut], k) for cut in cuts]
            self.shards += len(shards)
            waiting.append((ids, shards))
            if len(waiting) > 1:
                yield _gathered(*waiting.popleft())
        while waiting:
            yield _gathered(*waiting.popleft())


def _gathered(ids: np.ndarray, shards: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import ray

    results = ray.get(list(shards))
    sims = np.concatenate([s for s, _ in results])
    names = np.concatenate([n for _, n in results])
    return ids, sims, names


@contextmanager
def ray_connection(runner: str) -> Iterator[int]:
    """Ray for the length of the block, as `--runner` names it: `ray` starts a local cluster,
    `ray=ADDRESS` joins that one; yields the cluster's CPUs. A Ray this process had already
    initialised is used as it is, and left so."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--runner ray needs the ray extra: pip install 'embedlake[ray]'") from exc
    if ray.is_initialized():
        yield int(ray.cluster_resources().get("CPU", 0))
        return
    address = runner.partition("=")[2] or None
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        _log.info("ray: %s, %d CPUs", address or "a local cluster", cpus)
        yield cpus
    finally:
        ray.shutdown()
