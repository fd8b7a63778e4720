"""The lake's tables: their names and Arrow schemas (the contract the catalog's views read)."""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

__all__ = [
    "AGREEMENT_SCHEMA",
    "EMBEDDINGS_SCHEMA",
    "FILES_GONE_SCHEMA",
    "FILES_SCHEMA",
    "LABEL_ISSUES_SCHEMA",
    "MAP_SCHEMA",
    "METADATA_KEYS_SCHEMA",
    "NEIGHBORS_SCHEMA",
    "LIST_SCORES_SCHEMA",
    "PREDICTIONS_SCHEMA",
    "PROBES_SCHEMA",
    "REVIEWS_SCHEMA",
    "RUNS_SCHEMA",
    "SCHEMAS",
    "SCHEMA_PART",
    "TABLES",
    "THUMBNAILS_SCHEMA",
    "GroupKey",
]

TABLES = (
    "runs",
    "files",
    "files_gone",
    "embeddings",
    "metadata",
    "neighbors",
    "list_scores",
    "agreement",
    "probes",
    "predictions",
    "label_issues",
    "reviews",
    "thumbnails",
    "map",
)
_TS = pa.timestamp("us", tz="UTC")

RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("stage", pa.string()),
        ("started_at", _TS),
        ("finished_at", _TS),
        ("status", pa.string()),
        ("source", pa.string()),
        ("params", pa.string()),
        ("n_files", pa.int64()),
        ("n_files_new", pa.int64()),
        ("n_files_changed", pa.int64()),
        ("n_files_unchanged", pa.int64()),
        ("n_files_gone", pa.int64()),
        ("files_snapshot", pa.bool_()),
        ("n_ok", pa.int64()),
        ("n_error", pa.int64()),
        ("n_unique_images", pa.int64()),
        ("n_embedded", pa.int64()),
        ("n_skipped", pa.int64()),
        ("error_counts", pa.string()),
        ("n_metadata_rows", pa.int64()),
        ("n_metadata_without_file", pa.int64()),
        ("n_files_without_metadata", pa.int64()),
        ("device", pa.string()),
        ("precision", pa.string()),
        ("weights", pa.string()),
        ("weights_random", pa.bool_()),
        ("seconds", pa.float64()),
        ("images_per_second", pa.float64()),
        ("stage_seconds", pa.string()),
        ("versions", pa.string()),
        ("message", pa.string()),
    ]
)

FILES_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("path", pa.string()),
        ("path_bytes", pa.binary()),  # the exact name where `path` is not it (not UTF-8)
        ("size_bytes", pa.int64()),
        ("mtime", _TS),
        ("mtime_ns", pa.int64()),
        ("image_id", pa.string()),
        ("status", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),
        ("n_frames", pa.int32()),
        ("exif_datetime", pa.timestamp("us")),
        ("exif_make", pa.string()),
        ("exif_model", pa.string()),
        ("exif_orientation", pa.int32()),
        ("exif_exposure_time", pa.float64()),
        ("exif_f_number", pa.float64()),
        ("exif_iso", pa.float64()),
        ("exif_focal_length", pa.float64()),
        ("gps_lat", pa.float64()),
        ("gps_lon", pa.float64()),
        # when this version was written: orders two versions one run wrote (the probe's, then a
        # decode error's)
        ("recorded_at", _TS),
    ]
)

# a path the source's previous run had and this run no longer found
FILES_GONE_SCHEMA = pa.schema([("run_id", pa.string()), ("path", pa.string())])


class GroupKey(NamedTuple):
    """Embeddings comparable with each other: the `embeddings` (and `neighbors`) rows that share
    these three columns. A tuple: it sorts, hashes and compares as the plain 3-tuple."""

    backbone: str
    weights_id: str
    precision: str


# The embeddings as readers see them: `embedding` as float32 lists. A part may store the vectors
# as float16 (`embeddings_table(storage="float16")`, the default: half the bytes, recall@10 of the
# graph 0.999 against float32, bench/index_choice.py); the catalog (DuckDB reads Parquet's FLOAT16
# as FLOAT), `read_table` (which casts to this schema) and `vectors_of` all give float32, so a lake
# may hold float32 parts (older runs, `--vector-storage float32`) and float16 parts side by side.
EMBEDDINGS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("backbone", pa.string()),
        ("weights_id", pa.string()),
        ("precision", pa.string()),
        ("dim", pa.int32()),
        ("embedding", pa.list_(pa.float32())),
        ("norm", pa.float32()),
        ("run_id", pa.string()),
        ("created_at", _TS),
    ]
)

NEIGHBORS_SCHEMA = pa.schema(
    [
        ("backbone", pa.string()),
        ("weights_id", pa.string()),
        ("precision", pa.string()),
        ("image_id", pa.string()),
        ("neighbor_id", pa.string()),
        ("rank", pa.int16()),
        ("similarity", pa.float32()),
        ("method", pa.string()),
        # the part's version (its name's); null in parts written before lists had their
        # scores parts, which `list_score_versions` then scores from the rows: a filter on it
        # skips every part that has them by its row groups' statistics, reading nothing
        ("version", pa.int32()),
    ]
)

# a list's rows at or above this similarity are kept with its scores (`close`): near-duplicate
# questions at such a threshold read them there (sql/catalog/50_neighbors.sql, close_floor())
CLOSE_FLOOR = 0.9
CLOSE_ROW = pa.struct(
    [("neighbor_id", pa.string()), ("rank", pa.int16()), ("similarity", pa.float32())]
)
# one row per list of a neighbours part, in a part of the same name written before it: what the
# report's whole-graph questions ask of a list (outliers: the mean similarity; near-duplicates:
# its rows at or above CLOSE_FLOOR) in a tenth of the rows (the `list_score_versions` view)
LIST_SCORES_SCHEMA = pa.schema(
    [
        ("backbone", pa.string()),
        ("weights_id", pa.string()),
        ("precision", pa.string()),
        ("image_id", pa.string()),
        ("similarity_sum", pa.float64()),
        ("n", pa.int16()),
        ("max_similarity", pa.float32()),
        ("method", pa.string()),
        ("close", pa.list_(CLOSE_ROW)),
    ]
)

AGREEMENT_SCHEMA = pa.schema(
    [
        ("backbone_a", pa.string()),
        ("weights_id_a", pa.string()),
        ("backbone_b", pa.string()),
        ("weights_id_b", pa.string()),
        ("precision", pa.string()),
        ("n_images", pa.int64()),
        ("linear_cka", pa.float64()),
    ]
)

# linear probes of a label column on each backbone's embeddings (tasks.probes), one part per run
_PROBE_KEY = [
    ("backbone", pa.string()),
    ("weights_id", pa.string()),
    ("precision", pa.string()),
    ("column", pa.string()),
]

PROBES_SCHEMA = pa.schema(
    [
        *_PROBE_KEY,
        ("n_images", pa.int64()),
        ("n_classes", pa.int64()),
        ("n_set_aside", pa.int64()),
        ("set_aside_labels", pa.list_(pa.string())),
        ("n_folds", pa.int32()),
        ("accuracy", pa.float64()),
        ("balanced_accuracy", pa.float64()),
        ("macro_f1", pa.float64()),
        ("chance", pa.float64()),
        ("knn_accuracy", pa.float64()),
        ("n_issues", pa.int64()),
        ("n_reviewed_labels", pa.int64()),  # probed images whose reviewed label was used
        ("macs", pa.int64()),
        ("ms_per_image", pa.float64()),
        ("run_id", pa.string()),
    ]
)

PREDICTIONS_SCHEMA = pa.schema(
    [
        *_PROBE_KEY,
        ("image_id", pa.string()),
        ("given_label", pa.string()),
        ("reviewed_label", pa.string()),  # a review's relabel: probed in the given one's place
        ("predicted_label", pa.string()),
        ("probability", pa.float64()),
        ("run_id", pa.string()),
    ]
)

LABEL_ISSUES_SCHEMA = pa.schema(
    [
        *_PROBE_KEY,
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("given_label", pa.string()),
        ("reviewed_label", pa.string()),  # a review's relabel: probed in the given one's place
        ("suggested_label", pa.string()),
        ("label_quality", pa.float64()),
        ("is_issue", pa.bool_()),
        ("run_id", pa.string()),
    ]
)

# people's decisions about images (tasks.reviews), appended, never rewritten
REVIEWS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("decision", pa.string()),  # keep | exclude | relabel | tag
        ("value", pa.string()),  # a relabel's label, a tag's tag
        ("label_column", pa.string()),  # the label column a relabel corrects
        ("note", pa.string()),
        ("who", pa.string()),
        ("made_at", _TS),
        ("run_id", pa.string()),  # the latest finished run when it was made
    ]
)

# one small JPEG per image, made by the decode that embeds it (tasks.decode.make_thumbnail):
# the explorer's and the report's pictures, without SOURCE
THUMBNAILS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("thumbnail", pa.binary()),  # JPEG bytes
        ("width", pa.int32()),  # the thumbnail's pixels
        ("height", pa.int32()),
        ("run_id", pa.string()),
    ]
)

# the 2-D map per (backbone, weights_id, precision) group (tasks.maps): a fit's part holds every
# current image of the group, a later run's part the images it placed on that version
MAP_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("backbone", pa.string()),
        ("weights_id", pa.string()),
        ("precision", pa.string()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("map_version", pa.int32()),  # 1, 2, ... per group: a new one at each fit
        ("placed", pa.string()),  # fit | neighbors | fallback (no placed neighbour)
        ("run_id", pa.string()),  # the run (or reindex) that placed it
    ]
)

# the metadata table's columns are the sidecar's own; these two are always there for joins
METADATA_KEYS_SCHEMA = pa.schema([("path", pa.string()), ("image_id", pa.string())])

# each table's folder holds an empty part of this name: its schema, for readers of an empty table
SCHEMA_PART = "_schema.parquet"

SCHEMAS = {
    "runs": RUNS_SCHEMA,
    "files": FILES_SCHEMA,
    "files_gone": FILES_GONE_SCHEMA,
    "embeddings": EMBEDDINGS_SCHEMA,
    "metadata": METADATA_KEYS_SCHEMA,
    "neighbors": NEIGHBORS_SCHEMA,
    "list_scores": LIST_SCORES_SCHEMA,
    "agreement": AGREEMENT_SCHEMA,
    "probes": PROBES_SCHEMA,
    "predictions": PREDICTIONS_SCHEMA,
    "label_issues": LABEL_ISSUES_SCHEMA,
    "reviews": REVIEWS_SCHEMA,
    "thumbnails": THUMBNAILS_SCHEMA,
    "map": MAP_SCHEMA,
}
