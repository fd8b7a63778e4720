"""The parameters of one run, typed, so the Prefect UI and the CLI show and validate the same.

Each run option is declared here once: its type (the allowed values, for a `Literal`), default,
help and bounds on its `RunParams` field, and its command-line spelling in a `Flag` beside the
type. `embedlake run`, `serve` and `demo` build their options from these fields
(`run_options`), the Prefect deployment takes a `RunParams`, and a test checks the README's
synopsis against them. Validation is pydantic's; `explain` turns its error into the one line the
CLI prints, naming the flag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from .backbones import DEFAULT_BACKBONES
from .discover import DEFAULT_MAX_PIXELS
from .sources import readable_path

__all__ = [
    "COMPILE_AUTO_MIN_IMAGES",
    "Flag",
    "Precision",
    "RunParams",
    "VectorStorage",
    "check_option",
    "default_lake",
    "explain",
    "run_options",
]

# torch.compile costs ~25 s per process and saves ~0.09 ms per image on an H200
# (bench/gpu_breakdown.py): it pays for itself from about a quarter of a million images
COMPILE_AUTO_MIN_IMAGES = 250_000

Precision = Literal["auto", "fp32", "bf16", "fp16"]
VectorStorage = Literal["float16", "float32"]
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Flag:
    """How a field is spelled on the command line. `metavar` is what the README's synopsis shows
    after the flag (a `Literal` field shows its values instead); a list field is `repeatable`."""

    name: str
    metavar: str | None = None
    repeatable: bool = False


def default_lake() -> str:
    """`$EMBEDLAKE_LAKE`, else `lake` (in the working directory)."""
    return os.environ.get("EMBEDLAKE_LAKE", "lake")


class RunParams(BaseModel):
    source: str = Field(
        description="folder of images (searched recursively), or an fsspec URL of one"
    )
    lake: Annotated[str, Flag("--lake", "DIR|URL")] = Field(
        default_factory=default_lake,
        description="lake folder or fsspec URL, e.g. s3://bucket/lake "
        "(default: ./lake or $EMBEDLAKE_LAKE)",
    )
    metadata: Annotated[str | None, Flag("--metadata", "FILE")] = Field(
        default=None, description="sidecar metadata: CSV, Parquet or JSON lines"
    )
    key: Annotated[str, Flag("--key", "path|image_id")] = Field(
        default="path", description="sidecar column naming the file: path or image_id"
    )
    label_columns: Annotated[list[str], Flag("--label-column", "COL", repeatable=True)] = Field(
        default_factory=list,
        description="repeatable: probe each backbone on this sidecar (or files, e.g. exif_model) "
        "column and find its label issues",
    )
    backbones: Annotated[list[str], Flag("--backbone", "NAME", repeatable=True)] = Field(
        default_factory=lambda: list(DEFAULT_BACKBONES),
        description="repeatable (default: mobilenet_v1 and xception); see `embedlake backbones`",
    )
    weights: Annotated[str, Flag("--weights", "imagenet|random|DIR|NAME=PATH,...")] = Field(
        default="imagenet", description="pretrained, seeded random, or files per backbone"
    )
    device: Annotated[str, Flag("--device", "auto|cpu|cuda[:N]")] = Field(
        default="auto", description="where the models run; auto: CUDA when there is one"
    )
    precision: Annotated[Precision, Flag("--precision")] = Field(
        default="auto",
        description="auto: what the lake holds for these weights, else measured (see README)",
    )
    batch_size: Annotated[int | None, Flag("--batch-size", "N")] = Field(
        default=None, ge=1, description="images per batch (default: 16 on CPU, 256 on CUDA)"
    )
    workers: Annotated[int, Flag("--workers", "N")] = Field(
        default=-1, ge=-1, description="decode processes: -1 = automatic, 0 = none"
    )
    max_pixels: Annotated[int, Flag("--max-pixels", "N")] = Field(
        default=DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb limit per image"
    )
    decode: Annotated[Literal["auto", "pillow", "device"], Flag("--decode")] = Field(
        default="auto",
        description="JPEG decoding: pillow (CPU workers) or device (nvJPEG); auto: device on CUDA",
    )
    compile: Annotated[Literal["auto", "on", "off"], Flag("--compile")] = Field(
        default="auto",
        description="torch.compile the models: ~25 s once, then faster forward passes; "
        "auto: on CUDA for large runs (see README)",
    )
    neighbors_k: int = Field(default=10, ge=1, description="neighbours kept per image")
    ann_threshold: int = Field(
        default=200_000, ge=2, description="above this many images, a faiss IVF-SQ8 index"
    )
    runner: Annotated[str, Flag("--runner", "local|ray|ray=ADDRESS")] = Field(
        default="local", description="ray: a local Ray cluster; ray=ADDRESS: an existing one"
    )
    shard_size: Annotated[int, Flag("--shard-size", "N")] = Field(
        default=256, ge=1, description="images per shard task with --runner ray"
    )
    part_rows: Annotated[int, Flag("--part-rows", "N")] = Field(
        default=4096,
        ge=1,
        description="rows per Parquet part of files and embeddings (a killed run keeps each part)",
    )
    vector_storage: Annotated[VectorStorage, Flag("--vector-storage")] = Field(
        default="float16",
        description="type of the stored embedding values: float16 (half the bytes, the graph's "
        "recall@10 0.999 against float32) or float32; both read as FLOAT",
    )
    decode_timeout: Annotated[float, Flag("--decode-timeout", "S")] = Field(
        default=30.0,
        gt=0,
        description="seconds a file may take to decode before it becomes a 'timeout' error row",
    )
    pillow_plugins: Annotated[
        list[str], Flag("--pillow-plugin", "MODULE[:FUNCTION]", repeatable=True)
    ] = Field(
        default_factory=list,
        description="import MODULE (or call MODULE:FUNCTION) to register more formats, e.g. "
        "pillow_heif:register_heif_opener; repeatable",
    )
    rehash: Annotated[bool, Flag("--rehash")] = Field(
        default=False,
        description="read and hash every file again; by default a file whose path, size and "
        "mtime match the previous run is not opened (rsync's quick check)",
    )
    no_report: Annotated[bool, Flag("--no-report")] = Field(
        default=False,
        description="finish without writing the HTML report (runs nobody reads, e.g. frequent "
        "scheduled ones); `embedlake report` builds it later from the lake",
    )
    # only `embedlake demo` sets this: random weights when ImageNet's cannot be had, said loudly
    random_fallback: bool = False

    @field_validator("source")
    @classmethod
    def _readable_source(cls, value: str) -> str:
        # a folder name that is not UTF-8 arrives surrogate-escaped; JSON (Prefect's API, the
        # lake's runs.params) cannot carry that, so a local path travels as readable text, which
        # `open_source` turns back into the name (one-to-one: a literal `\xNN` is escaped too)
        if "://" in value and not value.startswith("file://"):
            return value
        return readable_path(os.fsencode(value))

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError("expected auto, cpu or cuda[:N]")
        return value

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        if value not in ("local", "ray") and not value.startswith("ray="):
            raise ValueError("expected local, ray or ray=ADDRESS")
        return value


def _flag(field: FieldInfo) -> Flag | None:
    return next((m for m in field.metadata if isinstance(m, Flag)), None)


def run_options() -> list[tuple[str, FieldInfo, Flag]]:
    """(field name, field, flag) of each option on the command line, in declaration order."""
    fields = RunParams.model_fields.items()
    return [(name, field, flag) for name, field in fields if (flag := _flag(field))]


def check_option(name: str, value: Any) -> Any:
    """`value` validated as the option `name` of a run (for a command taking one, e.g.
    `reindex --device`); raises pydantic's ValidationError, which `explain` words."""
    checked = RunParams.model_construct()
    RunParams.__pydantic_validator__.validate_assignment(checked, name, value)
    return getattr(checked, name)


def explain(error: ValidationError) -> str:
    """The first problem of a ValidationError of RunParams in one line, naming the option as
    it is spelled on the command line."""
    first = error.errors()[0]
    field = RunParams.model_fields.get(str(first["loc"][0])) if first["loc"] else None
    if field is None:
        return first["msg"]
    flag = _flag(field)
    option = flag.name if flag else str(first["loc"][0])
    ctx, given = first.get("ctx", {}), first.get("input")
    if first["type"] == "greater_than_equal":
        return f"{option} must be at least {ctx['ge']}"
    if first["type"] == "greater_than":
        return f"{option} must be more than {ctx['gt']:g}"
    if first["type"] == "literal_error":
        *most, last = get_args(field.annotation)
        return f"{option} {given!r}: expected {', '.join(most)} or {last}"
    if first["type"] == "value_error":
        return f"{option} {given!r}: {ctx['error']}"
    return f"{option} {given!r}: {first['msg']}"
