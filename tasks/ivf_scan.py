"""An IVF segment's probed lists scanned as matrix products, for a batch of queries.

faiss scans a probed list query by query: each of a query's nprobe lists is decoded and dotted
with that query alone. When a batch probes each list many times over (an update's 10,000
queries probe each of 4,096 lists ~78 times at nprobe 32), the same scores come cheaper list by
list: the list's 8-bit codes are read once, and every query probing it is scored by one matrix
product over them (BLAS), which the per-query scan cannot use.

The scores are faiss's own, by the same arithmetic: a list holds residuals from its centroid c
(`by_residual`), each dimension j coded in 8 bits over its trained range (vmin_j, vdiff_j) and
decoded to vmin_j + (code_j + 0.5) / 255 * vdiff_j, so a query q scores

    q . c  +  q . (vmin + 0.5 vdiff / 255)  +  (q * vdiff / 255) . code

(inner product; q . c is the coarse score the probe found). The first two terms are a number
per (query, list), the last one matrix product per list. The lists probed and the codes scanned
are the same as faiss's; scores agree to float32 rounding, so the top-k agree but for ties.

`batched(ivf, ...)` says whether an index and a batch qualify (an IVF with 8-bit scalar codes on
residuals, inner product, enough queries per list); `search_preassigned` is then a drop-in for
faiss's of the same name.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["MIN_QUERIES_PER_LIST", "batched", "search_preassigned"]

# below this many queries per probed list (on average), faiss's own scan: a single query (the
# `nearest` command's) would pay a matrix product's setup per list for one row
MIN_QUERIES_PER_LIST = 8
_QUERY_CHUNK = 16_384  # queries scored at a time: their (query, probe) best are held at once
# BLAS's thread count is the process's: two scans at once would each set it and restore what
# they found, and could leave it at one thread; they take turns (each uses every core anyway)
_ONE_AT_A_TIME = threading.Lock()


def batched(ivf, n_queries: int, nprobe: int) -> bool:
    """Whether `ivf` (an IndexIVF, downcast) is scanned here for a batch of `n_queries`."""
    import faiss

    return (
        isinstance(ivf, faiss.IndexIVFScalarQuantizer)
        and ivf.sq.qtype == faiss.ScalarQuantizer.QT_8bit
        and ivf.by_residual
        and ivf.metric_type == faiss.METRIC_INNER_PRODUCT
        and n_queries * nprobe >= MIN_QUERIES_PER_LIST * ivf.nlist
    )


def search_preassigned(
    ivf, queries: np.ndarray, k: int, probed: np.ndarray, probe_s: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of each query's k best in the `probed` lists of `ivf` (scores `probe_s`,
    the coarse quantiser's), best first; unfilled slots -inf / -1. As faiss's
    `search_preassigned` answers, on `threads` threads."""
    import faiss

    d = ivf.d
    trained = faiss.vector_to_array(ivf.sq.trained)
    step = trained[d:] / 255
    offset = trained[:d] + 0.5 * step
    sims = np.full((len(queries), k), -np.inf, np.float32)
    labels = np.full((len(queries), k), -1, np.int64)
    for first in range(0, len(queries), _QUERY_CHUNK):
        chunk = slice(first, first + _QUERY_CHUNK)
        q = np.ascontiguousarray(queries[chunk], np.float32)
        base = probe_s[chunk] + (q @ offset)[:, None]  # per (query, probe): the first two terms
        sims[chunk], labels[chunk] = _scan(
            ivf.invlists, q * step, probed[chunk], base, k, d, threads
        )
    return sims, labels


def _scan(invlists, scaled, probed, base, k, d, threads) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each query over its probed lists: each (query, probe) pair's k best from
    its list, then each query's k best of its nprobe x k."""
    from threadpoolctl import threadpool_limits

    n, nprobe = probed.shape
    if not probed.size:
        return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    pairs = probed.ravel()
    order = np.argsort(pairs, kind="stable")  # the (query, probe) pairs, list by list
    # bounds[v] .. bounds[v + 1]: list v's pairs in `order` (a -1, no list, sorts before 0)
    bounds = np.searchsorted(pairs[order], np.arange(int(pairs.max()) + 2))
    lists = [int(v) for v in np.flatnonzero(np.diff(bounds))]
    threads = max(1, threads)
    got_s = np.full((n * nprobe, k), -np.inf, np.float32)
    got_l = np.full((n * nprobe, k), -1, np.int64)
    base = base.ravel()

    def run(mine: list[int]) -> None:
        for number in mine:
            size = invlists.list_size(number)
            if not size:
                continue
            rows = order[bounds[number] : bounds[number + 1]]  # (query, probe) pairs
            codes = _view(invlists.get_codes(number), size * d, np.uint8).reshape(size, d)
            ids = _view(invlists.get_ids(number), size, np.int64)
            scores = scaled[rows // nprobe] @ codes.astype(np.float32).T
            scores += base[rows, None]
            keep = min(k, size)
            if keep < size:
                top = np.argpartition(scores, size - keep, axis=1)[:, size - keep :]
            else:
                top = np.broadcast_to(np.arange(size), (len(rows), size))
            got_s[rows, :keep] = np.take_along_axis(scores, top, 1)
            got_l[rows, :keep] = ids[top]

    # BLAS on one thread per list: the threads here split the lists (small products on
    # several BLAS threads each ran ~3x slower)
    with _ONE_AT_A_TIME, threadpool_limits(1, "blas"), ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, [lists[i::threads] for i in range(threads)]))
    got_s = got_s.reshape(n, nprobe * k)
    got_l = got_l.reshape(n, nprobe * k)
    if nprobe * k > k:
        top = np.argpartition(-got_s, k - 1, axis=1)[:, :k]
        got_s, got_l = np.take_along_axis(got_s, top, 1), np.take_along_axis(got_l, top, 1)
    best = np.argsort(-got_s, axis=1, kind="stable")
    return np.take_along_axis(got_s, best, 1), np.take_along_axis(got_l, best, 1)


def _view(pointer, count: int, dtype) -> np.ndarray:
    """`count` items of `dtype` at a faiss pointer (the list's memory, mapped or not: no copy)."""
    import faiss

    return faiss.rev_swig_ptr(pointer, count).view(dtype)
