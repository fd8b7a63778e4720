"""The run report: one self-contained HTML page per run, with its data beside it.

LAKE/reports/<run_id>/index.html holds everything inline (plots as PNG data URIs from matplotlib,
thumbnails as JPEG data URIs, CSS in the page): no network reference, readable offline on a
laptop or a phone. Beside it: summary.json and one CSV per table for downstream tools.
LAKE/reports/latest/ is a copy of the newest report. Everything is read through the read-only
catalog (named queries from sql/analysis, the report's own from sql/report), thumbnails included:
the lake's `thumbnails`, made at decode time. Only an image the lake has no thumbnail of (a lake
written before thumbnails) is read from the SOURCE the run read, or one named with `embedlake
report --source`, never from a folder the lake names. Text from the lake is text: escaped in
HTML, drawn without mathtext in plots, and a CSV cell a spreadsheet would take for a formula
starts with an apostrophe.

A lake on shared storage (an fsspec URL) gets its reports written in its local cache folder
first; each run's folder is then uploaded to LAKE/reports/<run_id>/ (one upload per file), while
reports/latest/ stays in the cache: an object store cannot swap a whole folder at once.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from . import lake
from .catalog import connect_read_only, sql_text
from .discover import fs_path, open_regular_file
from .queries import run_query
from .render import formula_safe, formula_safe_text
from .sources import RemoteSource, open_source, readable_path

__all__ = ["ReportResult", "build_report", "csv_safe"]

_THUMB = 128
_PLAIN_TEXT = {"text.usetex": False, "text.parse_math": False}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:16px}
h1{font-size:1.5rem;margin:.2em 0}h2{font-size:1.2rem;margin-top:1.6em;border-bottom:1px solid #ccd}
section{background:#fff;border-radius:8px;padding:8px 16px 16px;margin:12px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;font-size:.85rem;display:block;overflow-x:auto;max-width:100%}
th,td{padding:3px 8px;border-bottom:1px solid #e3e6ea;text-align:left;white-space:nowrap}
.banner{background:#b00020;color:#fff;padding:12px 16px;border-radius:8px;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:132px;font-size:.72rem;word-break:break-all}
figure img{width:128px;height:128px;object-fit:cover;border-radius:4px;background:#e9ecef}
.pair{display:flex;gap:6px;align-items:flex-start;border:1px solid #e3e6ea;padding:6px;
border-radius:6px}
.plot{max-width:100%;height:auto}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:.9rem}
.muted{color:#667}
"""


Sample = dict[str, tuple[list[str], np.ndarray]]  # per backbone: image ids and their vectors


class ReportResult(dict):
    """Where the report went and what it says (`path`, `run_id`, `sections`, `bytes`).

    `lake_copy` is its folder's location in the lake (for a URL lake, the uploaded copy)."""


# C0/C1 controls and bidirectional overrides: shown as escapes, so text from the lake cannot
# hide itself or reorder what is shown around it
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(text: str) -> str:
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _h(text: Any) -> str:
    """Text (from the lake, most of it) as HTML text: escaped, its control characters shown."""
    return html.escape(_visible(str(text)))


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{data}">'


def _table(table: pa.Table, limit: int = 50) -> str:
    if table.num_rows == 0:
        return '<p class="muted">(none)</p>'
    rows = table.slice(0, limit).to_pylist()
    head = "".join(f"<th>{_h(c)}</th>" for c in table.column_names)
    body = "".join(
        "<tr>" + "".join(f"<td>{_h(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    more = (
        f'<p class="muted">{table.num_rows - limit} more rows in the CSV</p>'
        if (table.num_rows > limit)
        else ""
    )
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value[:6]) + (" ..." if len(value) > 6 else "")
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "..."  # a SHA-256
    return str(value)


class _Thumbnails:
    """Inline JPEG thumbnails of collection images: the lake's own (`thumbnails`, made when each
    image was decoded for embedding), so a report reads nothing outside the lake, whether SOURCE
    is remote, gone or unchanged (a rerun's report opens none of its files).

    Only for an image the lake has no thumbnail of (a lake written before thumbnails, until its
    next run makes them) is one read from `source`: the SOURCE the run itself read, or one the
    user names (`embedlake report --source`), never the folder a lake's `runs.source` names (a
    crafted lake would get the reader's own files into its report). A path from the lake is read
    only if it stays inside `source`; a failure is shown, not hidden. Without either there is no
    thumbnail, and `note` says why.

    `img` leaves a marker in the section's HTML; `fill` looks every marked image up in the lake
    at once and puts the pictures in."""

    def __init__(self, con: Any, source: str | Path | RemoteSource | None):
        if isinstance(source, str):  # one the user named: a folder that is not there is an error
            source = open_source(source)
        self.source = source
        self.in_lake = bool(_report_rows(con, "has_thumbnails").column(0)[0].as_py())
        named = readable_path(os.fsencode(source)) if isinstance(source, Path) else str(source)
        if self.in_lake:
            self.note = "from the lake (made when each image was decoded)" + (
                f"; an image without one there: from {named}" if source is not None else ""
            )
        elif source is not None:
            self.note = f"from {named} (this lake holds none: written before thumbnails)"
        else:
            self.note = (
                "none: this lake holds none (written before thumbnails; its next run makes them), "
                "and for such a lake they come only from the source the run read or one named "
                "with `embedlake report --source DIR_OR_URL`, never from the lake's runs.source"
            )
        self._wanted: list[tuple[str, str | None]] = []  # (path, image_id) per marker
        self._cache: dict[str, str] = {}

    def img(self, path: str, caption: str, image_id: str | None = None) -> str:
        self._wanted.append((path, image_id))
        marker = f"<!--thumbnail:{len(self._wanted) - 1}-->"  # '<' in lake text is escaped
        return f"<figure>{marker}<figcaption>{_h(caption)}</figcaption></figure>"

    def fill(self, con: Any, sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The sections with their markers replaced by the thumbnails (or by nothing)."""
        if not self._wanted:
            return sections
        by_path = {}
        unnamed = sorted({p for p, i in self._wanted if i is None})
        if unnamed:
            found = _report_rows(con, "path_image_ids", paths=unnamed).to_pylist()
            by_path = {r["path"]: r["image_id"] for r in found}
        ids = [i if i is not None else by_path.get(p) for p, i in self._wanted]
        stored = {}
        if self.in_lake and any(ids):
            rows = _report_rows(con, "thumbnails", image_ids=sorted({i for i in ids if i}))
            stored = dict(
                zip(
                    rows.column("image_id").to_pylist(),
                    rows.column("thumbnail").to_pylist(),
                    strict=True,
                )
            )
        tags = []
        for (path, _), image_id in zip(self._wanted, ids, strict=True):
            if image_id in stored:
                tags.append(_img_tag(path, stored[image_id]))
            elif self.source is not None:
                if path not in self._cache:
                    self._cache[path] = self._render(path)
                tags.append(self._cache[path])
            else:
                tags.append("")
        marker = re.compile(r"<!--thumbnail:(\d+)-->")
        return [(title, marker.sub(lambda m: tags[int(m[1])], body)) for title, body in sections]

    def _read(self, path: str) -> bytes:
        name = fs_path(self.source, {"path": path})  # refuses absolute names and '..' parts
        if isinstance(self.source, RemoteSource):
            return self.source.read(name)
        real = Path(name).resolve(strict=True)
        if not real.is_relative_to(self.source):  # a symlink out of the source
            raise ValueError(f"{path!r} leads outside the source")
        with open_regular_file(real) as handle:  # a FIFO where the image was must not hang it
            return handle.read()

    def _render(self, path: str) -> str:
        from PIL import Image, ImageOps

        from .decode import to_rgb

        try:
            with Image.open(io.BytesIO(self._read(path))) as img:
                img.draft("RGB", (_THUMB * 2, _THUMB * 2))
                thumb = to_rgb(ImageOps.exif_transpose(img))
                thumb.thumbnail((_THUMB, _THUMB))
                out = io.BytesIO()
                thumb.save(out, "JPEG", quality=70)
            return _img_tag(path, out.getvalue())
        except Exception as exc:  # a moved, unreadable or refused file: say so in the page
            reason = _h(f"{type(exc).__name__}: {exc}"[:120])
            return f'<div class="muted">thumbnail unavailable: {reason}</div>'


def _img_tag(path: str, jpeg: bytes) -> str:
    encoded = base64.b64encode(jpeg).decode()
    return f'<img alt="{_h(path)}" src="data:image/jpeg;base64,{encoded}">'


def _pca_2d(vectors: np.ndarray, iterations: int = 6, oversample: int = 8) -> np.ndarray:
    """The rows projected on their first two principal components. A small matrix gets an exact
    SVD; a larger one randomized subspace iteration (Halko, Martinsson and Tropp 2011), seeded:
    2,000 x 2,048 in ~0.02 s against ~2.6 s for the full SVD, the plot the same. Each axis's
    sign is fixed (its largest loading positive) so reruns draw the same picture."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    width = 2 + oversample
    if min(centred.shape) <= 4 * width:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        axes = vt[:2]
    else:
        basis = np.random.default_rng(0).normal(size=(centred.shape[1], width))
        basis = basis.astype(centred.dtype)
        for _ in range(iterations):
            basis, _ = np.linalg.qr(centred.T @ (centred @ basis))
        _, _, vt = np.linalg.svd(centred @ basis, full_matrices=False)
        axes = vt[:2] @ basis.T
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return centred @ (axes * signs[:, None]).T


def _outliers_section(con: Any, thumbs: _Thumbnails, tables: dict[str, pa.Table]) -> tuple:
    outliers = run_query(con, "outliers", {"limit": "8"})
    tables["outliers"] = outliers
    by_backbone: dict[str, list[str]] = {}
    for r in outliers.to_pylist():
        by_backbone.setdefault(r["backbone"], []).append(
            thumbs.img(r["path"], f"{r['path']} ({r['score']:.3f})", r["image_id"])
        )
    body = "".join(
        f"<h3>{_h(b)}</h3><div class='grid'>{''.join(items)}</div>"
        for b, items in by_backbone.items()
    )
    return (
        "Outliers",
        '<p class="muted">lowest mean similarity to their nearest neighbours</p>'
        + (body or '<p class="muted">(none)</p>'),
    )


# images the report compares the backbones' neighbour sets on, and scores label purity over
AGREEMENT_SAMPLE = 50_000


def _agreement_section(con: Any, tables: dict[str, pa.Table]) -> tuple:
    import matplotlib.pyplot as plt

    # per image over a bounded sample (SHA-256 ids: the smallest are uniform), not the collection
    agreement = run_query(con, "backbone_agreement", {"sample": str(AGREEMENT_SAMPLE)})
    tables["backbone_agreement"] = agreement
    overall = [r for r in agreement.to_pylist() if r["scope"] == "overall"]
    per_image = [r["overlap"] for r in agreement.to_pylist() if r["scope"] == "image"]
    body = ""
    if overall and overall[0]["images"]:
        o = overall[0]
        body += (
            f"<p>mean neighbour-set overlap {o['overlap']:.3f} over {o['images']} images (at most "
            f"{AGREEMENT_SAMPLE:,}: those with the smallest image_ids, a uniform sample); "
            f"linear CKA {_fmt(o['linear_cka'])}</p>"
        )
        fig, ax = plt.subplots(figsize=(5, 2.4))
        ax.hist(per_image, bins=11, range=(0, 1), color="#5a8f29")
        ax.set_xlabel("share of top-10 neighbours in common")
        ax.set_ylabel("images")
        body += _png(fig)
    return ("Backbone agreement", body or '<p class="muted">needs two backbones</p>')


def _report_rows(con: Any, name: str, **params: Any) -> pa.Table:
    return con.sql(sql_text("report", f"{name}.sql"), params=params).to_arrow_table()


_MAX_CONFUSION_CLASSES = 25
_GALLERY = 8


def _labels_section(
    con: Any, column: str, thumbs: _Thumbnails, tables: dict[str, pa.Table]
) -> tuple:
    """What each backbone's linear probe makes of one --label-column: accuracy beside chance,
    confusion matrices, the most likely wrong labels, and accuracy against cost."""
    found = _report_rows(con, "probes", column=column)
    tables[f"probes_{column}"] = found
    title = f"Labels: {column}"
    probed = [r for r in found.to_pylist() if r["accuracy"] is not None]
    if not probed:
        return (title, '<p class="muted">no probe: fewer than two classes with 2+ images</p>')
    shown = found.select(
        ["backbone", "n_images", "n_classes", "n_set_aside", "accuracy", "balanced_accuracy"]
        + ["macro_f1", "chance", "knn_accuracy", "n_issues", "ms_per_image", "macs"]
    )
    best = max(probed, key=lambda r: (r["accuracy"], -r["macs"]))
    body = (
        '<p class="muted">linear probe (logistic regression on standardised embeddings, '
        f"{best['n_folds']}-fold cross-validated, out of fold) beside chance (the majority-class "
        "rate) and the neighbours' majority vote; near chance: the pixels do not show this "
        "column; near 1: they do (for a camera or a split: the column leaks).</p>"
        + _table(shown)
        + _accuracy_plot(probed)
        + _confusion_plots(_report_rows(con, "predictions", column=column))
        + _issue_gallery(con, column, best["backbone"], thumbs, tables)
        + _tradeoff_plot(probed, column)
    )
    return (title, body)


def _accuracy_plot(probed: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    names = [_visible(r["backbone"]) for r in probed]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 2.8))
    ax.bar(x - 0.2, [r["accuracy"] for r in probed], 0.4, label="probe accuracy", color="#3b6ea5")
    knn = [r["knn_accuracy"] or 0 for r in probed]
    ax.bar(x + 0.2, knn, 0.4, label="neighbours' vote", color="#9bb7d4")
    for i, r in enumerate(probed):
        ax.plot([i - 0.45, i + 0.45], [r["chance"]] * 2, color="#b00020", lw=2)
    ax.plot([], [], color="#b00020", lw=2, label="chance")
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _confusion_plots(pairs: pa.Table) -> str:
    import matplotlib.pyplot as plt

    rows = pairs.to_pylist()
    backbones = sorted({r["backbone"] for r in rows})
    if not backbones:
        return ""
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["given_label"]] = totals.get(r["given_label"], 0) + r["images"]
    classes = sorted(totals, key=lambda c: (-totals[c], c))[:_MAX_CONFUSION_CLASSES]
    index = {c: i for i, c in enumerate(sorted(classes))}
    size = 0.9 + 0.22 * len(index)
    fig, axes = plt.subplots(1, len(backbones), figsize=(1 + size * len(backbones), size + 0.8))
    for ax, backbone in zip(np.atleast_1d(axes), backbones, strict=True):
        matrix = np.zeros((len(index), len(index)), int)
        for r in rows:
            if r["backbone"] == backbone and {r["given_label"], r["predicted_label"]} <= set(index):
                matrix[index[r["given_label"]], index[r["predicted_label"]]] += r["images"]
        ax.imshow(matrix, cmap="Blues")
        for (i, j), n in np.ndenumerate(matrix):
            if n and len(index) <= 12:
                ax.text(j, i, n, ha="center", va="center", fontsize=7,
                        color="white" if n > matrix.max() / 2 else "black")  # fmt: skip
        ticks = [_visible(c) for c in index]
        ax.set_xticks(range(len(index)), ticks, rotation=60, fontsize=6)
        ax.set_yticks(range(len(index)), ticks, fontsize=6)
        ax.set_xlabel("predicted (out of fold)", fontsize=7)
        ax.set_ylabel("given", fontsize=7)
        ax.set_title(_visible(backbone), fontsize=8)
    note = (
        f'<p class="muted">the {_MAX_CONFUSION_CLASSES} largest classes of {len(totals)}</p>'
        if len(totals) > len(classes)
        else ""
    )
    return "<h3>Confusion matrices</h3>" + note + _png(fig)


def _issue_gallery(
    con: Any, column: str, backbone: str, thumbs: _Thumbnails, tables: dict[str, pa.Table]
) -> str:
    issues = _report_rows(con, "label_issue_gallery", column=column, backbone=backbone,
                          limit=_GALLERY)  # fmt: skip
    tables[f"label_issues_{column}"] = issues.drop_columns(["neighbours"])
    cards = []
    for r in issues.to_pylist():
        tiles = [
            thumbs.img(
                r["path"],
                f"{r['path']}: given {r['given_label']}, suggested {r['suggested_label']} "
                f"(quality {r['label_quality']:.3f})",
                r["image_id"],
            )
        ]
        for wanted, what in ((r["given_label"], "given"), (r["suggested_label"], "suggested")):
            near = next((n for n in r["neighbours"] or [] if n["label"] == wanted), None)
            tiles.append(
                thumbs.img(near["path"], f"nearest with the {what} label {wanted}: {near['path']}")
                if near
                else f'<p class="muted">no {what} label ({_h(wanted)}) '
                "among its graph neighbours</p>"
            )
        cards.append('<div class="pair">' + "".join(tiles) + "</div>")
    return (
        f"<h3>Most likely wrong labels ({_h(backbone)}, the most accurate probe)</h3>"
        '<p class="muted">each flagged image, then its nearest neighbour carrying the given '
        "label and the nearest carrying the suggested one</p>"
        + (f'<div class="grid">{"".join(cards)}</div>' if cards else '<p class="muted">none</p>')
    )


def _tradeoff_plot(probed: list[dict[str, Any]], column: str) -> str:
    """Probe accuracy against cost per backbone; MobileNet variants (alpha, rho) as a curve."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, cost, label in (
        (axes[0], "ms_per_image", "ms per image (forward, measured)"),
        (axes[1], "macs", "multiply-adds per image"),
    ):
        families: dict[str, list[dict[str, Any]]] = {}
        for r in probed:
            families.setdefault(r["backbone"].split("_")[0], []).append(r)
        for family, members in sorted(families.items()):
            members = sorted(members, key=lambda r: r["macs"])
            ax.plot([r[cost] for r in members], [r["accuracy"] for r in members], "o-",
                    label=_visible(family))  # fmt: skip
            for r in members:
                ax.annotate(_visible(r["backbone"]), (r[cost], r["accuracy"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(label, fontsize=8)
    axes[0].set_ylabel(_visible(f"probe accuracy on {column}"), fontsize=8)
    axes[0].legend(fontsize=7)
    return "<h3>Accuracy against cost</h3>" + _png(fig)


def build_report(
    root: str | Path | lake.Lake,
    run_id: str | None = None,
    color_by: str = "label",
    sample: int = 2000,
    source: str | Path | RemoteSource | None = None,
) -> ReportResult:
    """Write LAKE/reports/<run_id>/ (index.html, summary.json, CSVs) and refresh reports/latest.

    Each section is a builder fed by named queries; the tables it shows are written as CSV.
    Thumbnails come from the lake; `source` is read only for images the lake has none of (see
    `_Thumbnails`).
    """
    import matplotlib

    matplotlib.use("Agg")
    root = lake.Lake.at(root)
    # labels, paths and names in plots are text: no mathtext (a '$' pair was parsed), no LaTeX
    with matplotlib.rc_context(_PLAIN_TEXT), connect_read_only(root) as con:
        run = _the_run(con, root, run_id)
        run_id = lake.valid_run_id(run["run_id"])  # it names the report's folder
        tables: dict[str, pa.Table] = {}
        seconds: dict[str, float] = {}

        def timed(name: str, build: Any, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return build(*args)
            finally:
                seconds[name] = round(time.perf_counter() - started, 3)

        read_once = timed("collection", _read_collection_once, con)
        thumbs = timed("thumbnails", _Thumbnails, con, source)
        previous = _previous_run(con, run_id)
        runs = [run_id] if previous is None else [run_id, previous]
        samples = timed("sample", _sampled_vectors, con, runs, sample)
        vectors = samples.get(run_id, {})
        sections = [
            timed("run", _run_section, run, run_id, thumbs),
            timed("errors", _errors_section, con, run_id, tables),
            timed("exif", _exif_section, con, run_id, tables),
            timed("duplicates", _duplicates_section, con, thumbs, tables),
            timed("outliers", _outliers_section, con, thumbs, tables),
            timed("label_structure", _label_structure_section, con, color_by, vectors, tables),
            timed("agreement", _agreement_section, con, tables),
        ]
        for column in json.loads(run["params"] or "{}").get("label_columns") or []:
            sections.append(timed(f"labels:{column}", _labels_section, con, column, thumbs, tables))
        sections.append(timed("changes", _changes_section, con, run_id, previous, samples, tables))
        sections = timed("fill_thumbnails", thumbs.fill, con, sections)
    return _write_report(root, run, run_id, sections, tables, seconds, read_once)


# The most rows of the collection the report reads into its session at once: half the read
# connection's 1GB at the ~350 bytes a row measured (332 MB at 1 M rows). Past it the table
# spills, and reading the spilled table took longer than resolving the view per query
# (10 M rows: 23.6 s against 19.7 s, bench/measured/report-collection-10000000.json).
READ_ONCE_ROWS = 1_500_000


def _read_collection_once(con: Any) -> bool:
    """The current collection (`images`, a view resolving every source's latest files), read
    once into a temporary table of the same name, which the connection's queries then read in
    its place (DuckDB resolves a name in `temp` first, from views and macros too); whether it
    was (a collection of more than READ_ONCE_ROWS stays a view: see there).

    The sections about the collection (cameras, duplicates and near-duplicates, outliers,
    agreement) ask for it seven times; each resolved it again, 1.8 s at 1 M images. The table
    counts against the connection's memory limit: nothing is written to the lake."""
    (rows,) = _report_rows(con, "collection_rows").column("n").to_pylist()
    if rows > READ_ONCE_ROWS:
        return False
    con.execute("CREATE TEMP TABLE images AS SELECT * FROM images")
    return True


def _the_run(con: Any, root: lake.Lake, run_id: str | None) -> dict[str, Any]:
    runs = _report_rows(con, "run", run_id=run_id).to_pylist()
    if not runs:
        raise LookupError(
            f"no run {run_id} in {root}" if run_id else f"no finished run in {root} yet"
        )
    return runs[0]


def _previous_run(con: Any, run_id: str) -> str | None:
    """The finished run before this one, which "what changed" compares with."""
    previous = _report_rows(con, "previous_run", run_id=run_id).to_pylist()
    return previous[0]["run_id"] if previous else None


def _sampled_vectors(con: Any, run_ids: list[str], sample: int) -> dict[str, Sample]:
    """Per run and backbone, the image ids and embeddings of a sample of the run's images, read
    once for the report's run and the one before it: the label structure plots the run's, what
    changed compares the two samples' centroids. A run without embeddings has no entry."""
    embedded = _report_rows(con, "run_embeddings", run_ids=run_ids, limit=sample)
    found: dict[str, Sample] = {}
    for run_id in run_ids:
        of_run = embedded.filter(pa.compute.equal(embedded["run_id"], run_id))
        for backbone in sorted(set(of_run.column("backbone").to_pylist())):
            part = of_run.filter(pa.compute.equal(of_run["backbone"], backbone))
            found.setdefault(run_id, {})[backbone] = (
                part.column("image_id").to_pylist(),
                lake.vectors_of(part),
            )
    return found


def _run_section(run: dict[str, Any], run_id: str, thumbs: _Thumbnails) -> tuple:
    weights = json.loads(run["weights"] or "{}")
    stages = json.loads(run["stage_seconds"] or "{}")
    versions = json.loads(run["versions"] or "{}")
    rate = run["images_per_second"]
    kv = {
        "run": run_id,
        "status": run["status"],
        "source": run["source"],
        "started": run["started_at"],
        "finished": run["finished_at"],
        "files": f"{run['n_files']} ({run['n_ok']} ok, {run['n_error']} errors)",
        "distinct images": run["n_unique_images"],
        "embedded / already in the lake": f"{run['n_embedded']} / {run['n_skipped']}",
        "throughput": f"{rate:.1f} images/s" if rate else "-",
        "wall time": f"{run['seconds']:.1f} s" if run["seconds"] else "-",
        "device / precision": f"{run['device']} / {run['precision']}",
        **{f"weights: {k}": v for k, v in weights.items()},
        "stage seconds": ", ".join(f"{k} {v}" for k, v in stages.items()),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "thumbnails": thumbs.note,
    }
    body = "".join(f"<div>{_h(k)}</div><div>{_h(_fmt(v))}</div>" for k, v in kv.items())
    banner = ""
    if run["weights_random"]:
        banner = (
            '<p class="banner">RANDOM WEIGHTS: this run used randomly initialised '
            "backbones; its similarities, neighbours and groupings mean nothing. "
            f"{_h(run['message'] or '')}</p>"
        )
    return ("The run", f'{banner}<div class="kv">{body}</div>')


def _errors_section(con: Any, run_id: str, tables: dict[str, pa.Table]) -> tuple:
    errors = run_query(con, "errors_summary", {"run_id": run_id})
    tables["errors"] = errors
    return ("Errors by code", _table(errors))


def _exif_section(con: Any, run_id: str, tables: dict[str, pa.Table]) -> tuple:
    import matplotlib.pyplot as plt

    cameras = run_query(con, "exif_summary", {})
    tables["cameras"] = cameras
    months = _report_rows(con, "taken_by_month", run_id=run_id)
    if not months.num_rows:
        return (
            "Cameras and dates (EXIF)",
            _table(cameras) + '<p class="muted">no EXIF capture dates</p>',
        )
    fig, ax = plt.subplots(figsize=(7, 2.4))
    ax.bar(
        [m.strftime("%Y-%m") for m in months.column("month").to_pylist()],
        months.column("images").to_pylist(),
        color="#3b6ea5",
    )
    ax.set_ylabel("images")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    return ("Cameras and dates (EXIF)", _table(cameras) + _png(fig))


def _duplicates_section(con: Any, thumbs: _Thumbnails, tables: dict[str, pa.Table]) -> tuple:
    dups = run_query(con, "duplicates", {})
    tables["duplicates"] = dups
    gallery = "".join(
        '<div class="pair">'
        + "".join(thumbs.img(p, p, row["image_id"]) for p in row["paths"][:4])
        + "</div>"
        for row in dups.slice(0, 12).to_pylist()
    )
    near = run_query(con, "near_duplicates", {"threshold": "0.95"})
    tables["near_duplicates"] = near
    pairs = "".join(
        '<div class="pair">'
        + thumbs.img(r["path_a"], r["path_a"], r["image_id_a"])
        + thumbs.img(
            r["path_b"], f"{r['path_b']} ({r['backbone']} {r['similarity']:.4f})", r["image_id_b"]
        )
        + "</div>"
        for r in near.slice(0, 16).to_pylist()
    )
    return (
        "Duplicates and near-duplicates",
        f"<h3>Byte-identical ({dups.num_rows} groups)</h3>"
        f'<div class="grid">{gallery or "<p class=muted>(none)</p>"}</div>'
        f"<h3>Near-identical, cosine &ge; 0.95 ({near.num_rows} pairs)</h3>"
        f'<div class="grid">{pairs or "<p class=muted>(none)</p>"}</div>',
    )


_NO_PURITY = pa.table(
    {
        "backbone": pa.array([], pa.string()),
        "label": pa.array([], pa.string()),
        "images": pa.array([], pa.int64()),
        "purity": pa.array([], pa.float64()),
    }
)


def _label_structure_section(
    con: Any,
    color_by: str,
    vectors: Sample,
    tables: dict[str, pa.Table],
) -> tuple:
    """A 2-D PCA of each backbone's sample, coloured by `color_by`, and its label purity (over
    the images with the smallest ids, as the agreement's)."""
    (has_column,) = _report_rows(con, "has_column", column=color_by).column(0).to_pylist()
    labels: dict[str, str] = {}
    if has_column:  # the labels of the sample alone (a dict of the collection's is ~6 GB at 10 M)
        sampled = sorted({i for ids, _ in vectors.values() for i in ids})
        rows = _report_rows(con, "labels", column=color_by, image_ids=sampled).to_pylist()
        labels = {r["image_id"]: r["label"] for r in rows}
    plots = [
        _pca_plot(backbone, ids, found, labels, color_by)
        for backbone, (ids, found) in vectors.items()
        if len(ids) >= 3
    ]
    # without the column there is nothing to score (the query would still read the graph)
    if has_column:
        purity = run_query(
            con, "label_purity", {"column": color_by, "sample": str(AGREEMENT_SAMPLE)}
        )
        note = (
            f'<p class="muted">label purity over at most {AGREEMENT_SAMPLE:,} images, those '
            "with the smallest image_ids (a uniform sample)</p>"
        )
    else:
        purity = _NO_PURITY
        note = (
            f'<p class="muted">the sidecar has no "{_h(color_by)}"'
            " column: points are uncoloured</p>"
        )
    tables["label_purity"] = purity
    return ("Label structure", note + "".join(plots) + _table(purity))


def _pca_plot(
    backbone: str, ids: list[str], vectors: np.ndarray, labels: dict[str, str], column: str
) -> str:
    import matplotlib.pyplot as plt

    xy = _pca_2d(vectors)
    fig, ax = plt.subplots(figsize=(5, 4))
    names = [_visible(labels.get(i) or "(no label)") for i in ids]
    for name in sorted(set(names)):
        mask = np.array([n == name for n in names])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=14, label=name)
    ax.set_title(_visible(f"{backbone}: 2-D PCA, coloured by {column}"))
    if len(set(names)) <= 20:
        ax.legend(fontsize=6, loc="best")
    return _png(fig)


def _changes_section(
    con: Any,
    run_id: str,
    prev_id: str | None,
    samples: dict[str, Sample],
    tables: dict[str, pa.Table],
) -> tuple:
    """Images added, removed and kept since the previous finished run, and how far each
    backbone's centroid moved (between the two runs' samples)."""
    title = "What changed since the previous run"
    if prev_id is None:
        return (title, '<p class="muted">the first run of this lake: nothing to compare</p>')
    changes = _report_rows(con, "image_changes", run_id=run_id, previous_id=prev_id)
    tables["changes"] = changes
    before = samples.get(prev_id, {})
    shifts = []
    for backbone, (_, found) in samples.get(run_id, {}).items():
        if backbone in before and len(before[backbone][0]) and len(found):
            a, b = before[backbone][1].mean(axis=0), found.mean(axis=0)
            cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            shifts.append({"backbone": backbone, "centroid_shift": 1 - cosine})
    shift_table = pa.Table.from_pylist(shifts) if shifts else pa.table({})
    tables["centroid_shift"] = shift_table
    return (
        title,
        f"<p>compared with run {_h(prev_id)}</p>"
        + _table(changes)
        + "<p>centroid shift (1 - cosine between the mean embeddings)</p>"
        + _table(shift_table),
    )


def _write_report(
    root: lake.Lake,
    run: dict[str, Any],
    run_id: str,
    sections: list[tuple[str, str]],
    tables: dict[str, pa.Table],
    seconds: dict[str, float],
    read_once: bool,
) -> ReportResult:
    """The page, its CSVs and summary.json in reports/<run_id>/, copied to reports/latest
    (`section_seconds`: what each section's queries and plots took; `collection_read_once`:
    whether the collection was read into the session once, see `_read_collection_once`)."""
    reports = root.local_dir / "reports"
    folder = reports / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(_page(run_id, sections))
    for name, table in tables.items():
        if table.num_columns:
            pacsv.write_csv(csv_safe(table), folder / _csv_name(name))
    summary = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in run.items()}
    summary["sections"] = [t for t, _ in sections]
    summary["tables"] = {name: t.num_rows for name, t in tables.items()}
    summary["section_seconds"] = seconds
    summary["collection_read_once"] = read_once
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _replace_latest(reports, folder, run_id)
    return ReportResult(
        path=str(folder / "index.html"),
        lake_copy=root.publish_folder(folder, "reports", run_id),
        run_id=run_id,
        sections=summary["sections"],
        bytes=(folder / "index.html").stat().st_size,
        summary=summary,
    )


def _page(run_id: str, sections: list[tuple[str, str]]) -> str:
    nav = " &middot; ".join(f'<a href="#s{i}">{_h(t)}</a>' for i, (t, _) in enumerate(sections))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>embedlake report {_h(run_id)}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>embedlake report</h1><p class='muted'>run {_h(run_id)} "
        f"&middot; built {datetime.now():%Y-%m-%d %H:%M}</p><p>{nav}</p>"
        + "".join(
            f'<section id="s{i}"><h2>{_h(t)}</h2>{b}</section>' for i, (t, b) in enumerate(sections)
        )
        + "</main></body></html>"
    )


def _replace_latest(reports: Path, folder: Path, run_id: str) -> None:
    # reports/latest is never half-copied: the copy is staged beside it, then renamed into place
    latest = reports / "latest"
    staging = reports / f".latest-{run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging)
    shutil.rmtree(latest, ignore_errors=True)
    staging.rename(latest)


def _csv_name(table: str) -> str:
    """A table's CSV file name; a label column names some tables, and a lake's params name the
    label columns, so anything but a plain word character is replaced."""
    return re.sub(r"[^0-9A-Za-z_-]", "_", table) + ".csv"


def csv_safe(table: pa.Table) -> pa.Table:
    """CSV has no lists: join them with '|'. Text that a spreadsheet would run as a formula gets
    a leading apostrophe, in the header and in every cell."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pa.array(
                ["|".join(map(str, v)) if v is not None else None for v in column.to_pylist()],
                pa.string(),
            )
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = formula_safe(column)
        columns[formula_safe_text(name)] = column
    return pa.table(columns)
