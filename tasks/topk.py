"""Exact top-k by inner product: one scan of (ids, vectors) blocks with a running top-k per query.

The one exact search of embedlake: the neighbour graph's exact mode (`graph`), `nearest`,
`similar`, `neighbors.exact_topk` and the benches call it. Memory follows one block's scores
(queries x block rows) and k, never the number of vectors scanned. Scores are computed with torch
on `device`; the small merges of each block's winners run in numpy.

The ranking rule, the same whatever the block sizes or the device: higher similarity first; among
equal similarities (identical images under two ids score exactly alike) the one met first, where
a `start` answer comes before the scan and the scan goes in block order. An id met twice in a
query's list counts once (the first time). Slots left unfilled are None / -inf.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["merge", "top_k", "top_of_scores"]


def top_k(
    queries: np.ndarray,
    blocks: Iterable[tuple[Sequence[Any], np.ndarray]],
    k: int,
    *,
    query_ids: Sequence[Any] | None = None,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    device: str = "cpu",
    each_block: Callable[[Any, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n, k) object, similarities (n, k) float32) of each query row's k best block rows.

    `query_ids`: each query's own id, which is never its own neighbour. `start`: a ranked answer
    (ids, similarities) to continue from (an ANN index's, before the parts it does not cover).
    `each_block(scores, ids)`: sees every block's torch scores (queries x block rows, own ids
    at -inf), for a caller that reads them column-wise too (the graph's existing images).
    """
    n = len(queries)
    best_ids = np.full((n, k), None, object)
    best_s = np.full((n, k), -np.inf, np.float32)
    if start is not None:
        best_ids, best_s = merge(best_ids, best_s, *start, k)
    if not n or not k:
        return best_ids, best_s
    import torch

    own = None if query_ids is None else {image_id: r for r, image_id in enumerate(query_ids)}
    with torch.inference_mode():
        q = _tensor(queries, device)
        for ids, vectors in blocks:
            ids = np.asarray(ids, object)
            if not len(ids):
                continue
            scores = q @ _tensor(vectors, device).T
            if own is not None:
                _mask_own(scores, ids, own)
            if each_block is not None:
                each_block(scores, ids)
            s, i = top_of_scores(scores, min(k, len(ids)))
            # only rows whose k-th this block beats change (an equal score met later loses)
            rows = np.flatnonzero(s[:, 0] > best_s[:, -1])
            if len(rows):
                best_ids[rows], best_s[rows] = merge(
                    best_ids[rows], best_s[rows], ids[i[rows]], s[rows], k
                )
    best_ids[~np.isfinite(best_s)] = None
    return best_ids, best_s


def top_of_scores(scores: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, column indexes) of each row's k best in a torch score matrix, as numpy,
    ranked by the rule above (equal scores: the lower column first)."""
    import torch

    # topk picks among scores equal to the k-th arbitrarily: a row whose (k+1)-th best equals
    # its k-th may have left some out, so it is sorted whole (stable) and the lowest columns are
    # kept. One more column of topk finds those rows without a mask as large as the scores.
    values, columns = scores.topk(min(k + 1, scores.shape[1]), dim=1)
    if values.shape[1] > k:
        cut = torch.nonzero(values[:, k] == values[:, k - 1]).flatten()
        values, columns = values[:, :k].contiguous(), columns[:, :k].contiguous()
    else:
        cut = torch.empty(0, dtype=torch.int64)
    if len(cut):
        whole = torch.sort(scores[cut], dim=1, descending=True, stable=True)
        values[cut], columns[cut] = whole.values[:, :k], whole.indices[:, :k]
    values, columns = values.cpu().numpy(), columns.cpu().numpy()
    by_column = np.argsort(columns, axis=1)
    values = np.take_along_axis(values, by_column, 1)
    columns = np.take_along_axis(columns, by_column, 1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, 1), np.take_along_axis(columns, order, 1)


def merge(
    best_ids: np.ndarray,
    best_s: np.ndarray,
    cand_ids: np.ndarray,
    cand_s: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k (ids, similarities) of two ranked lists, `best` first among equals.

    A candidate already in its row's `best` is not taken twice (an image stored in two parts; a
    graph update redone after a kill offers the same images again).
    """
    if best_ids.size and cand_ids.size:
        again = (cand_ids[:, :, None] == best_ids[:, None, :]).any(axis=2)
        cand_s = np.where(again & (cand_ids != None), -np.inf, cand_s)  # noqa: E711 (element-wise)
    ids = np.concatenate([best_ids, cand_ids], axis=1)
    s = np.concatenate([best_s, cand_s], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(s, order, 1)


def _tensor(array: np.ndarray, device: str):
    import torch

    return torch.from_numpy(np.require(array, np.float32, ["C", "W"])).to(device)


def _mask_own(scores: Any, ids: np.ndarray, own: dict[Any, int]) -> None:
    """Each query's own id scores -inf: an image is not its own neighbour."""
    import torch

    rows = np.fromiter((own.get(image_id, -1) for image_id in ids), np.int64, len(ids))
    cols = np.flatnonzero(rows >= 0)
    if len(cols):
        device = scores.device
        scores[torch.from_numpy(rows[cols]).to(device), torch.from_numpy(cols).to(device)] = -float(
            "inf"
        )
