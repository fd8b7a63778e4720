"""The parameters of one run, typed, so the Prefect UI and the CLI show and validate the same."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from .backbones import DEFAULT_BACKBONES
from .discover import DEFAULT_MAX_PIXELS
from .sources import readable_path

__all__ = ["COMPILE_AUTO_MIN_IMAGES", "RunParams"]

# torch.compile costs ~25 s per process and saves ~0.09 ms per image on an H200
# (bench/gpu_breakdown.py): it pays for itself from about a quarter of a million images
COMPILE_AUTO_MIN_IMAGES = 250_000


class RunParams(BaseModel):
    source: str = Field(description="folder of images (searched recursively)")
    lake: str = Field(default="lake", description="the lake folder, or an fsspec URL")
    metadata: str | None = Field(default=None, description="sidecar CSV, Parquet or JSON lines")
    key: str = Field(default="path", description="sidecar column that names the file")
    backbones: list[str] = Field(default_factory=lambda: list(DEFAULT_BACKBONES))
    weights: str = Field(default="imagenet", description="imagenet | random | DIR | NAME=PATH,...")
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = Field(
        default=None, ge=1, description="default: 16 on CPU, 256 on CUDA"
    )
    workers: int = Field(default=-1, description="decode processes; -1 = automatic, 0 = none")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    decode: str = Field(
        default="auto", description="auto | pillow | device: JPEGs on the GPU (auto: on CUDA)"
    )
    compile: str = Field(
        default="auto",
        description="auto | on | off: torch.compile the models (auto: on CUDA, for large runs)",
    )
    neighbors_k: int = Field(default=10, ge=1, description="neighbours kept per image")
    ann_threshold: int = Field(
        default=200_000, ge=2, description="above this many images, a faiss IVF-SQ8 index"
    )
    runner: str = Field(
        default="local", description="local | ray (a local Ray started here) | ray=ADDRESS"
    )
    shard_size: int = Field(default=256, ge=1, description="images per shard with --runner ray")
    part_rows: int = Field(
        default=4096, ge=1, description="embedding rows per Parquet part; a killed run keeps each"
    )
    vector_storage: Literal["float16", "float32"] = Field(
        default="float16",
        description="type of the stored embedding values: float16 (half the bytes; the graph's "
        "recall@10 0.999 against float32) or float32; read as FLOAT either way",
    )
    decode_timeout: float = Field(
        default=30.0, gt=0, description="seconds per file, then 'timeout'"
    )
    pillow_plugins: list[str] = Field(
        default_factory=list, description="modules (or module:function) that register formats"
    )
    rehash: bool = Field(
        default=False,
        description="read and hash every file again, even those whose size and mtime are unchanged",
    )
    label_columns: list[str] = Field(
        default_factory=list,
        description="sidecar or files columns to probe per backbone and check for label issues",
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
