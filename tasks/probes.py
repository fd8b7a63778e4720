"""Linear probes and label issues: how well each backbone's stored embeddings predict a label
column, and which given labels are probably wrong.

Per (backbone, weights_id, precision) and label column (`--label-column`, a sidecar column or a
`files` column such as `exif_model`): scikit-learn's LogisticRegression on standardised vectors
(the scaler is fitted inside each fold), stratified k-fold cross-validation (k = 5, fewer when the
smallest kept class is smaller), out-of-fold probabilities. Classes with fewer than 2 images
cannot be cross-validated: they are set aside and counted (`n_set_aside`, `set_aside_labels`).
Confident learning (Northcutt et al. 2021, cleanlab's `find_label_issues` and
`get_label_quality_scores`, self-confidence) then flags labels the out-of-fold probabilities
disagree with. `knn_accuracy` is the majority label of an image's neighbours in the stored graph.

A probe near `chance` (the majority-class rate) says the pixels do not show the column; one near
1.0 on a column such as the camera model or the split says the column leaks into the pixels.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import graph, lake

__all__ = [
    "FILES_LABEL_COLUMNS",
    "FoldPlan",
    "LabelColumnError",
    "ProbeResult",
    "check_label_columns",
    "fit_probe",
    "knn_accuracy",
    "labels_of",
    "measure_backbone",
    "plan_folds",
    "run_probes",
]

MAX_FOLDS = 5
MIN_CLASS_IMAGES = 2  # the fewest images a class needs to be in both a training and a test fold
FILES_LABEL_COLUMNS = tuple(n for n in lake.FILES_SCHEMA.names if n not in ("run_id", "image_id"))


class LabelColumnError(ValueError):
    """A --label-column that neither the sidecar nor the files table has."""


def check_label_columns(columns: Sequence[str], sidecar_columns: Sequence[str] | None) -> None:
    """Raise a one-line LabelColumnError for the first column nothing can supply."""
    for column in columns:
        if column in FILES_LABEL_COLUMNS or (sidecar_columns and column in sidecar_columns):
            continue
        where = (
            f"the sidecar's columns are {', '.join(map(str, sidecar_columns))}"
            if sidecar_columns
            else "no --metadata sidecar was given"
        )
        raise LabelColumnError(
            f"--label-column {column}: no such column ({where}; files columns such as "
            "exif_model, exif_make, format also work)"
        )


def _label_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def labels_of(column: str, sidecar: Any, files: Iterable[dict[str, Any]]) -> dict[str, str]:
    """image_id -> label (as text) for the ok images that have one.

    A sidecar column wins over a files column of the same name. An image present under several
    paths takes the label of its first path by name (as the `image_paths` view does)."""
    ok = sorted(
        (r["path"], r) for r in files if r.get("status") == "ok" and r.get("image_id") is not None
    )
    if sidecar is not None and column in sidecar.columns:
        given = {p: v for p, v in zip(sidecar["path"], sidecar[column], strict=True)}
        pairs = [(r["image_id"], given.get(path)) for path, r in ok]
    else:
        pairs = [(r["image_id"], r.get(column)) for _, r in ok]
    labels: dict[str, str] = {}
    for image_id, value in pairs:
        if image_id not in labels and (text := _label_text(value)) is not None:
            labels[image_id] = text
    return labels


@dataclass
class FoldPlan:
    n_folds: int
    kept: list[str]  # classes probed, sorted
    set_aside: list[str]  # classes with too few images, sorted


def plan_folds(labels: Sequence[str], max_folds: int = MAX_FOLDS) -> FoldPlan:
    """Which classes can be cross-validated, and in how many folds (each class in every fold)."""
    counts = Counter(labels)
    kept = sorted(c for c, n in counts.items() if n >= MIN_CLASS_IMAGES)
    set_aside = sorted(c for c, n in counts.items() if n < MIN_CLASS_IMAGES)
    n_folds = min([max_folds, *(counts[c] for c in kept)]) if kept else 0
    return FoldPlan(n_folds, kept, set_aside)


@dataclass
class ProbeResult:
    classes: list[str]
    given: np.ndarray  # class index per image
    probabilities: np.ndarray  # (n, n_classes), out of fold
    n_folds: int
    metrics: dict[str, float]
    label_quality: np.ndarray  # 0..1, low = probably wrong
    is_issue: np.ndarray  # bool

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def fit_probe(
    vectors: np.ndarray, labels: Sequence[str], n_folds: int, seed: int = 0
) -> ProbeResult:
    """Out-of-fold logistic-regression probabilities, metrics and cleanlab's label issues.

    `labels` hold only kept classes (at least two, each with at least `n_folds` images)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    given = np.array([index[c] for c in labels])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(
        model, np.asarray(vectors, np.float64), given, cv=folds, method="predict_proba"
    )
    predicted = probabilities.argmax(axis=1)
    metrics = {
        "accuracy": float(accuracy_score(given, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(given, predicted)),
        "macro_f1": float(f1_score(given, predicted, average="macro")),
        "chance": float(np.bincount(given).max() / len(given)),
    }
    # n_jobs=1: cleanlab's default forks a pool, which deadlocks in a process with torch's threads
    return ProbeResult(
        classes=classes,
        given=given,
        probabilities=probabilities,
        n_folds=n_folds,
        metrics=metrics,
        label_quality=get_label_quality_scores(given, probabilities),
        is_issue=find_label_issues(given, probabilities, n_jobs=1),
    )


def knn_accuracy(labels: dict[str, str], neighbors: Iterable[tuple[str, str, int]]) -> float | None:
    """How often the majority label among an image's graph neighbours is its own label.

    `neighbors`: (image_id, neighbor_id, rank) rows; only labelled images and neighbours count.
    A tie goes to the label of the nearest neighbour among the tied. None without any vote."""
    votes: dict[str, list[tuple[int, str]]] = {}
    for image_id, neighbor_id, rank in neighbors:
        if image_id in labels and neighbor_id in labels:
            votes.setdefault(image_id, []).append((rank, labels[neighbor_id]))
    if not votes:
        return None
    right = 0
    for image_id, ranked in votes.items():
        counts = Counter(label for _, label in ranked)
        top = max(counts.values())
        winner = min((r, lab) for r, lab in ranked if counts[lab] == top)[1]
        right += winner == labels[image_id]
    return right / len(votes)


def measure_backbone(
    name: str, device: str, batch: int = 4, repeats: int = 3, budget_s: float = 2.0
) -> tuple[int, float]:
    """(MACs per image, milliseconds per image of a forward pass on `device`, fp32).

    Measured here because a run's forward seconds cover all backbones at once, and a rerun that
    embeds nothing new measures nothing. The best of up to `repeats` timed passes after a warm-up
    (fewer once `budget_s` is spent): the best, because other load only ever adds time."""
    import torch

    from .backbones import build_model, count_macs, resolve_backbone

    spec = resolve_backbone(name)
    model = build_model(spec)
    macs = count_macs(model, spec.input_size)
    # laid out as the run's Embedder lays them out: NCHW depthwise convolutions are far slower
    model = model.to(device, memory_format=torch.channels_last)
    x = torch.zeros(batch, 3, spec.input_size, spec.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    timed: list[float] = []
    with torch.inference_mode():
        model(x)  # warm-up: allocations, kernel choice
        while len(timed) < repeats and (not timed or sum(timed) < budget_s):
            started = time.perf_counter()
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            timed.append(time.perf_counter() - started)
    return macs, 1000 * min(timed) / batch


def _backbone_cost(name: str, device: str) -> tuple[int, float]:
    """`measure_backbone`, once per backbone, device and machine: kept in embedlake's cache, so a
    nightly run does not spend seconds re-timing what it timed yesterday."""
    from .precision import cached_measurement, hardware_name

    key = f"{hardware_name(device)}|{name}|{device}"
    cost = cached_measurement(
        lake.cache_root() / "backbone_cost.json", key, lambda: measure_backbone(name, device)
    )
    return int(cost[0]), float(cost[1])


def run_probes(
    root: lake.Lake,
    run_id: str,
    labels_by_column: dict[str, dict[str, str]],
    paths: dict[str, str],
    groups: Sequence[lake.GroupKey],
    device: str = "cpu",
    k: int = 10,
) -> list[dict[str, Any]]:
    """Probe every (backbone, weights_id, precision) group on every column; write this run's
    `predictions`, `label_issues` and `probes` parts (probes last: its rows say the run probed).

    `paths`: image_id -> path, for the label_issues rows; `k`: the graph's list length (for
    knn_accuracy, from the group's current lists). Returns the probes rows.

    Reviewed labels win: where a review relabelled an image for a column (tasks.reviews), the
    probe learns and judges that label; the given one stays beside it (`given_label`,
    `reviewed_label`) and the probes row counts them (`n_reviewed_labels`)."""
    reviewed = _reviewed_labels(root, labels_by_column, paths)
    probes, predictions, issues = [], [], []
    measured: dict[str, tuple[int, float]] = {}
    for group in groups:
        if group.backbone not in measured:
            measured[group.backbone] = _backbone_cost(group.backbone, device)
        macs, ms = measured[group.backbone]
        edges = graph.graph_edges(root, group, k)
        for column, given in labels_by_column.items():
            key = {**group._asdict(), "column": column, "run_id": run_id}
            wanted = pa.array(sorted({*given, *reviewed[column]}), pa.string())
            ids, vectors = graph.group_vectors(root, group, wanted)
            labels = _Labels(given, reviewed[column])
            row, predicted, flagged = _probe_column(key, list(ids), vectors, labels, edges, paths)
            probes.append({**row, "macs": macs, "ms_per_image": ms})
            predictions += predicted
            issues += flagged
    root.write_part(
        lake.rows_to_table(predictions, lake.PREDICTIONS_SCHEMA), "predictions", f"{run_id}.parquet"
    )
    root.write_part(
        lake.rows_to_table(issues, lake.LABEL_ISSUES_SCHEMA), "label_issues", f"{run_id}.parquet"
    )
    root.write_part(lake.rows_to_table(probes, lake.PROBES_SCHEMA), "probes", f"{run_id}.parquet")
    return probes


def _reviewed_labels(
    root: lake.Lake, labels_by_column: dict[str, dict[str, str]], paths: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Per column, image_id -> reviewed label for this run's images; said in the run's log."""
    from .reviews import reviewed_labels
    from .run_context import log

    reviewed = {}
    for column in labels_by_column:
        reviewed[column] = reviewed_labels(root, column, paths)
        if reviewed[column]:
            log().info(
                "probes of %s use %d reviewed label(s) in place of the given ones",
                column,
                len(reviewed[column]),
            )
    return reviewed


@dataclass
class _Labels:
    """One column's labels: as given, and as reviewed (these win)."""

    given: dict[str, str]
    reviewed: dict[str, str]

    def __getitem__(self, image_id: str) -> str:
        found = self.reviewed.get(image_id)
        return found if found is not None else self.given[image_id]


def _probe_column(
    key: dict[str, str],
    ids: list[str],
    vectors: np.ndarray,
    labels: _Labels,
    edges: list[tuple[str, str, int]],
    paths: dict[str, str],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One group's probe of one column: its probes row (without the cost), and its predictions
    and label_issues rows (none when fewer than two classes can be probed). The labels probed
    are the reviewed ones where there are any."""
    given = [labels[i] for i in ids]
    plan = plan_folds(given)
    kept = set(plan.kept)
    rows = [j for j, label in enumerate(given) if label in kept]
    row = {
        **key,
        "n_images": len(rows),
        "n_classes": len(plan.kept),
        "n_set_aside": len(ids) - len(rows),
        "set_aside_labels": plan.set_aside,
        "n_folds": plan.n_folds,
        "n_reviewed_labels": sum(ids[j] in labels.reviewed for j in rows),
        "knn_accuracy": knn_accuracy({ids[j]: given[j] for j in rows}, edges),
    }
    predictions, issues = [], []
    if len(plan.kept) < 2:
        return row, predictions, issues
    result = fit_probe(vectors[rows], [given[j] for j in rows], plan.n_folds)
    row.update(result.metrics, n_issues=int(result.is_issue.sum()))
    for pos, j in enumerate(rows):
        guess = result.classes[result.predicted[pos]]
        image = {
            **key,
            "image_id": ids[j],
            "given_label": labels.given.get(ids[j]),
            "reviewed_label": labels.reviewed.get(ids[j]),
        }
        probability = float(result.probabilities[pos].max())
        predictions.append({**image, "predicted_label": guess, "probability": probability})
        issues.append(
            {
                **image,
                "path": paths.get(ids[j]),
                "suggested_label": guess,
                "label_quality": float(result.label_quality[pos]),
                "is_issue": bool(result.is_issue[pos]),
            }
        )
    return row, predictions, issues
