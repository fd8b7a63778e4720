"""Query by example: embed images from outside the lake exactly as the lake's own images were
embedded, and list the nearest images of the lake's current collection.

"Exactly" means the same (backbone, weights_id, precision) group as stored embeddings: the weights
are reloaded from where the run that made them found them (or from `--weights`), and their
fingerprint must equal the lake's `weights_id`, else the query is refused with a one-line error
naming the weights that are needed (`random` lakes always reload: random init is seeded). Query
images go through the run's own decode and crop (`tasks.decode`: EXIF orientation, first frame,
alpha over white, timm's eval resize and centre crop) and the run's forward pass (`tasks.embed`).

The search is an exact scan of the group's stored rows, streamed from the read-only catalog in
blocks, with a running top-k per query: memory is bounded by the block size and k, not by the
number of images (beyond the map of the current collection's paths). Nothing is written to the
lake.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .backbones import resolve_backbone
from .decode import CropPlan, DecodeError, decode_for_backbones
from .weights import WeightsError, WeightsSource, parse_weights_spec

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "RESULT_SCHEMA",
    "LakeGroup",
    "SimilarError",
    "SimilarResult",
    "choose_groups",
    "decode_query",
    "find_similar",
    "held_backbones",
    "nearest_in_blocks",
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

_BLOCK_ROWS = 8192
_QUERY_BATCH = 32


class SimilarError(ValueError):
    """A query that cannot be answered; the message (one line) says why."""


@dataclass(frozen=True)
class LakeGroup:
    """Stored embeddings that are comparable with each other, and the run that made them."""

    backbone: str
    weights_id: str
    precision: str
    run_params: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class SimilarResult:
    table: pa.Table  # RESULT_SCHEMA
    notes: list[str]  # for the user: what was done differently from the run, and why


def choose_groups(
    stored: Iterable[tuple[str, str, str]],
    finished_runs: list[dict[str, Any]],
    backbones: list[str] | None = None,
    weights_ids: dict[str, str] | None = None,
) -> list[LakeGroup]:
    """The group to search per backbone (default: every backbone with stored embeddings).

    `stored`: the lake's (backbone, weights_id, precision) groups. `finished_runs`: newest first,
    each with `params` (dict), `weights` (backbone -> weights_id) and `precision`. A backbone
    takes the weights of the latest finished run that used it, unless `weights_ids` names one;
    a group no finished run made is taken only when it is the backbone's only choice.
    """
    stored = sorted(set(stored))
    chosen = []
    for backbone in held_backbones(stored, backbones):
        options = [g for g in stored if g[0] == backbone]
        if weights_ids and backbone in weights_ids:
            options = [g for g in options if g[1] == weights_ids[backbone]]
            if not options:
                have = ", ".join(sorted({g[1] for g in stored if g[0] == backbone}))
                raise SimilarError(
                    f"the lake holds no {backbone} embeddings made with weights "
                    f"{weights_ids[backbone]} (it holds: {have})"
                )
        for run in finished_runs:
            key = (backbone, (run.get("weights") or {}).get(backbone), run.get("precision"))
            if key in options:
                chosen.append(LakeGroup(*key, run_params=run.get("params") or {}))
                break
        else:
            if len(options) > 1:
                raise SimilarError(
                    f"the lake holds {backbone} embeddings of {len(options)} weights or "
                    f"precisions, none from a finished run: choose with --weights"
                )
            chosen.append(LakeGroup(*options[0]))
    return chosen


def held_backbones(
    stored: Iterable[tuple[str, str, str]], backbones: list[str] | None = None
) -> list[str]:
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


def weights_source_for(group: LakeGroup) -> WeightsSource:
    """Where the weights of `group` come from, read off its weights_id and its run's `--weights`."""
    origin = group.weights_id.rpartition(":")[0]
    spec = resolve_backbone(group.backbone)
    if origin.startswith("random-seed"):
        return WeightsSource("random")
    if origin == spec.pretrained_name:
        return WeightsSource("imagenet")
    if origin.startswith("file-"):
        given = str(group.run_params.get("weights"))
        if "=" in given:  # NAME=PATH,...: this backbone's file only, whatever became of the rest
            mine = [
                item for item in given.split(",") if item.split("=")[0].strip() == group.backbone
            ]
            given = ",".join(mine)
        try:
            return parse_weights_spec(given, [group.backbone])[group.backbone]
        except WeightsError as exc:
            raise WeightsError(
                f"the lake's {group.backbone} embeddings were made with the weights file "
                f"{origin.removeprefix('file-')} ({group.weights_id}), no longer where their run "
                f"found it ({exc}): pass --weights {group.backbone}=PATH"
            ) from exc
    raise WeightsError(
        f"the lake's {group.backbone} embeddings were made with weights {group.weights_id}, "
        f"whose origin embedlake does not know: pass --weights {group.backbone}=PATH"
    )


def decode_query(location: str, plans: list[CropPlan], max_pixels: int) -> dict[str, np.ndarray]:
    """The crops of one query image (a local path or an fsspec URL), as a run cuts them."""
    try:
        if "://" in location:
            import fsspec

            with fsspec.open(location, "rb") as f:
                data = f.read()
        else:
            data = Path(location).expanduser().read_bytes()
    except (OSError, ValueError, ImportError) as exc:
        raise SimilarError(
            f"query image {location}: cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        return decode_for_backbones(data, plans, max_pixels)
    except DecodeError as exc:
        raise SimilarError(f"query image {location}: {exc.code}: {exc.message}") from exc


def nearest_in_blocks(
    queries: np.ndarray, blocks: Iterable[tuple[list[str], np.ndarray]], k: int
) -> list[list[tuple[str, float]]]:
    """Per query row, the k (image_id, dot product) best over every block, best first.

    Exact, with memory bounded by one block's scores; an image_id met in several blocks counts
    once (its first score).
    """
    best: list[list[tuple[str, float]]] = [[] for _ in range(len(queries))]
    for ids, vectors in blocks:
        if not len(ids):
            continue
        scores = vectors @ queries.T  # (block, queries)
        take = min(k, len(ids))
        top = np.argpartition(-scores, take - 1, axis=0)[:take] if take < len(ids) else None
        for q in range(len(queries)):
            rows = top[:, q] if top is not None else range(len(ids))
            best[q] = _merge(best[q], [(ids[r], float(scores[r, q])) for r in rows], k)
    return best


def _merge(
    best: list[tuple[str, float]], found: list[tuple[str, float]], k: int
) -> list[tuple[str, float]]:
    seen = {image_id for image_id, _ in best}
    fresh = [(i, s) for i, s in found if i not in seen]
    return sorted(best + fresh, key=lambda item: (-item[1], item[0]))[:k]


def _stored_groups(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    sql = "SELECT DISTINCT backbone, weights_id, precision FROM embedding_rows"
    return [tuple(row) for row in con.execute(sql).fetchall()]


def _finished_runs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT params, weights, precision FROM runs WHERE status = 'finished' "
        "ORDER BY started_at DESC"
    ).fetchall()
    return [
        {"params": json.loads(p or "{}"), "weights": json.loads(w or "{}"), "precision": prec}
        for p, w, prec in rows
    ]


def _blocks(
    con: duckdb.DuckDBPyConnection, group: LakeGroup, paths: dict[str, str]
) -> Iterator[tuple[list[str], np.ndarray]]:
    """The group's stored vectors of the current collection's images, a block at a time."""
    reader = con.sql(
        "SELECT image_id, embedding FROM embedding_rows "
        "WHERE backbone = $backbone AND weights_id = $weights_id AND precision = $precision",
        params={
            "backbone": group.backbone,
            "weights_id": group.weights_id,
            "precision": group.precision,
        },
    ).to_arrow_reader(_BLOCK_ROWS)
    for batch in reader:
        ids = batch.column(0).to_pylist()
        keep = [i for i, image_id in enumerate(ids) if image_id in paths]
        if not keep:
            continue
        flat = batch.column(1).flatten().to_numpy(zero_copy_only=False)
        vectors = flat.astype(np.float32, copy=False).reshape(len(ids), -1)[keep]
        yield [ids[i] for i in keep], vectors


def _precision_here(precision: str, device: str) -> tuple[str, str | None]:
    """The lake's precision, or fp32 where this device cannot compute fp16 (with a note)."""
    if precision == "fp16" and not device.startswith("cuda"):
        return "fp32", (
            f"the lake's embeddings are fp16, which {device} does not compute: the queries were "
            "embedded at fp32 (fp16 stays within cosine 0.999 of fp32)"
        )
    return precision, None


def find_similar(
    lake: str | Path,
    queries: list[str],
    *,
    backbones: list[str] | None = None,
    k: int = 10,
    weights: str | None = None,
    device: str = "auto",
) -> SimilarResult:
    """The k nearest images of the lake's current collection to each query image, per backbone.

    Raises SimilarError or WeightsError (one-line messages) for a query image that cannot be
    read or decoded, a backbone the lake does not hold, or weights that cannot be had or do not
    reproduce the lake's weights_id. Reads the lake through its read-only catalog only.
    """
    from .catalog import connect_read_only
    from .embed import Embedder, resolve_device
    from .weights import load_backbone

    if k < 1:
        raise SimilarError("k must be at least 1")
    names = [resolve_backbone(name).name for name in backbones] if backbones else None
    notes: list[str] = []
    found: dict[str, list[list[tuple[str, float]]]] = {}
    with connect_read_only(lake) as con:
        stored, runs = _stored_groups(con), _finished_runs(con)
        loaded = {}
        if weights is not None:  # --weights picks among the lake's weights for each backbone
            names = held_backbones(stored, names)
            for name, source in parse_weights_spec(weights, names).items():
                loaded[name] = load_backbone(resolve_backbone(name), source)
        groups = choose_groups(
            stored, runs, names, {n: b.weights_id for n, b in loaded.items()} or None
        )
        # every query decoded before any weights load: a broken one fails fast
        crops = _decode_queries(queries, groups, runs[0]["params"] if runs else {})
        paths = dict(con.execute("SELECT image_id, path FROM image_paths").fetchall())
        device = resolve_device(device)
        for group in groups:
            spec = resolve_backbone(group.backbone)
            backbone = loaded.get(spec.name) or load_backbone(spec, weights_source_for(group))
            if backbone.weights_id != group.weights_id:
                raise WeightsError(
                    f"the lake's {group.backbone} embeddings were made with weights "
                    f"{group.weights_id}, but {backbone.source.kind} weights give "
                    f"{backbone.weights_id}: pass --weights with the weights that made them"
                )
            precision, note = _precision_here(group.precision, device)
            if note:
                notes.append(note)
            embedder = Embedder([backbone], device, precision)
            vectors = _embed_queries(embedder, spec.name, crops[spec.name])
            found[spec.name] = nearest_in_blocks(vectors, _blocks(con, group, paths), k)
    rows = [
        {
            "query": query,
            "backbone": group.backbone,
            "rank": rank,
            "path": paths[image_id],
            "image_id": image_id,
            "similarity": similarity,
        }
        for position, query in enumerate(queries)
        for group in groups
        for rank, (image_id, similarity) in enumerate(found[group.backbone][position], start=1)
    ]
    return SimilarResult(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), notes)


def _decode_queries(
    queries: list[str], groups: list[LakeGroup], fallback: dict[str, Any]
) -> dict[str, list[np.ndarray]]:
    """Per backbone, each query's crop, cut as the run that made its group cut its images: with
    that run's Pillow plugins and pixel limit, and the crop plans of all its backbones (a large
    JPEG's reduced decode depends on the largest resize among them)."""
    from .decode import crop_plans
    from .decode_pool import load_pillow_plugins
    from .discover import DEFAULT_MAX_PIXELS

    decoded: dict[tuple[tuple[str, ...], int], list[dict[str, np.ndarray]]] = {}
    out = {}
    for group in groups:
        params = group.run_params or fallback
        names = tuple(sorted({*(params.get("backbones") or []), group.backbone}))
        max_pixels = int(params.get("max_pixels") or DEFAULT_MAX_PIXELS)
        if (names, max_pixels) not in decoded:
            load_pillow_plugins(params.get("pillow_plugins") or [])
            plans = crop_plans({n: resolve_backbone(n).data_config() for n in names})
            decoded[names, max_pixels] = [decode_query(q, plans, max_pixels) for q in queries]
        out[group.backbone] = [crops[group.backbone] for crops in decoded[names, max_pixels]]
    return out


def _embed_queries(embedder: Any, name: str, crops: list[np.ndarray]) -> np.ndarray:
    import torch

    out = []
    for start in range(0, len(crops), _QUERY_BATCH):
        batch = np.stack(crops[start : start + _QUERY_BATCH])
        embeddings, _ = embedder.embed({name: torch.from_numpy(batch)})
        out.append(embeddings[name])
    return np.concatenate(out)
