"""Embed: uint8 crops in, L2-normalised embeddings (and their raw norms) out, in batches.

Decoding runs in replaceable worker processes (tasks.decode_pool), overlapped with the forward
passes. Thumbnails made by the same decode (`DecodeJob.thumbnail`) come back with the batch
(`BatchResult.thumbnails`). Batches travel
as uint8 NHWC and are normalised on the device with timm's arithmetic (x/255 - mean) / std, then
laid out channels_last. Forward passes run under `torch.inference_mode()` at the run's precision:
fp32, or bf16/fp16 autocast. Every input item yields a result: an embedding per backbone, or the
decode error that stopped it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np
import pyarrow as pa

from .decode import CropPlan, Thumbnail
from .decode_pool import Decoded, DecodeJob, iter_decoded
from .params import Precision

if TYPE_CHECKING:
    import torch

    from .weights import LoadedBackbone

__all__ = [
    "PRECISIONS",
    "BatchResult",
    "Embedder",
    "cpu_has_native_bf16",
    "iter_embedded_batches",
    "thumbnails_table",
]

PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass
class BatchResult:
    """One batch's outcome: embeddings per backbone for `ok_ids`, and the items that failed."""

    ok_ids: list[str]
    embeddings: dict[str, np.ndarray]  # backbone -> (n, dim) float32, L2-normalised
    norms: dict[str, np.ndarray]  # backbone -> (n,) float32
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (image_id, code, message)
    # thumbnails made by the decodes that led here (of ok_ids, and of thumbnail-only jobs)
    thumbnails: list[tuple[str, Thumbnail]] = field(default_factory=list)
    # thumbnail-only jobs whose decode failed now: (image_id, code, message); their embeddings
    # stand, and the next run tries again
    thumbnail_errors: list[tuple[str, str, str]] = field(default_factory=list)


def thumbnails_table(thumbnails: list[tuple[str, Thumbnail]], run_id: str) -> pa.Table:
    """Rows of the lake's `thumbnails` table."""
    from .schemas import THUMBNAILS_SCHEMA

    return pa.table(
        {
            "image_id": pa.array([i for i, _ in thumbnails], pa.string()),
            "thumbnail": pa.array([t.data for _, t in thumbnails], pa.binary()),
            "width": pa.array([t.width for _, t in thumbnails], pa.int32()),
            "height": pa.array([t.height for _, t in thumbnails], pa.int32()),
            "run_id": pa.array([run_id] * len(thumbnails), pa.string()),
        },
        schema=THUMBNAILS_SCHEMA,
    )


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU computes bf16 natively, so autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class Embedder:
    """The loaded backbones on one device at one precision."""

    def __init__(
        self, backbones: list[LoadedBackbone], device: str, precision: str, compile: bool = False
    ):
        """`compile`: torch.compile each folded model for a fixed batch shape (a shorter batch is
        padded to it, so the last batch of a run does not compile again). On an H200 it made the
        forward passes 1.7x faster after ~25 s of compiling (bench/gpu_breakdown.py)."""
        import copy

        import torch

        from .fold import fold_batchnorm

        self.device = torch.device(device)
        self.precision = precision
        self.models: dict[str, torch.nn.Module] = {}
        self.seconds: Counter[str] = Counter()  # transfer, forward
        self.max_batch = 1 << 30  # lowered on CUDA out-of-memory
        self.compiled = compile
        self._compiled_batch: int | None = None  # the batch size the compiled graphs are for
        self._norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for loaded in backbones:
            # a folded copy: the caller's model (and its weights_id) stay as loaded
            model = copy.deepcopy(loaded.model).eval()
            fold_batchnorm(model)
            model = model.to(self.device, memory_format=torch.channels_last)
            if compile:
                model = torch.compile(model, dynamic=False)
            self.models[loaded.spec.name] = model
            cfg = loaded.spec.data_config()
            shape = (1, 3, 1, 1)
            mean = torch.tensor(cfg["mean"], device=self.device).view(shape)
            std = torch.tensor(cfg["std"], device=self.device).view(shape)
            self._norm[loaded.spec.name] = (mean, std)

    def _autocast(self):
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def embed(
        self, crops: dict[str, torch.Tensor]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """uint8 NHWC batches per backbone -> (unit embeddings, raw norms) as float32 arrays."""
        return self.embed_async(crops).result()

    def embed_async(self, crops: dict[str, torch.Tensor]) -> PendingEmbeddings:
        """Queue the forward passes of a batch; `.result()` waits for its embeddings.

        On CUDA this returns once the work is queued, so the caller can prepare the next batch
        (decode it on the device, stack it) while the GPU computes this one; on the CPU the work
        is done before it returns. On CUDA out-of-memory the batch is split in halves until it
        fits; the smaller size is kept (`max_batch`) for the rest of the run, and said in the log.
        """
        import torch

        n = len(next(iter(crops.values())))
        while True:
            size = min(n, self.max_batch)
            try:
                parts = [
                    self._enqueue({k: v[i : i + size] for k, v in crops.items()})
                    for i in range(0, n, size)
                ]
                return PendingEmbeddings(parts, self.seconds)
            except torch.OutOfMemoryError:
                if self.device.type != "cuda" or size == 1:
                    raise
                torch.cuda.empty_cache()
                self.max_batch = max(1, size // 2)
                if self._compiled_batch is not None:  # pad to the smaller size (one recompile)
                    self._compiled_batch = min(self._compiled_batch, self.max_batch)
                logging.getLogger("embedlake").warning(
                    "CUDA out of memory at batch %d; continuing at %d", size, self.max_batch
                )

    def _enqueue(self, crops: dict[str, torch.Tensor]) -> _QueuedPart:
        import torch

        outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        cuda = self.device.type == "cuda"
        n = len(next(iter(crops.values())))
        if self.compiled:
            if self._compiled_batch is None or n > self._compiled_batch:
                self._compiled_batch = n
            crops = {k: _pad_batch(v, self._compiled_batch) for k, v in crops.items()}
        with torch.inference_mode():
            for name, model in self.models.items():
                started = time.perf_counter()
                batch = crops[name].to(self.device, non_blocking=True)
                moved = time.perf_counter()
                mean, std = self._norm[name]
                # the same ops, in the same order, as ToTensor + Normalize: bitwise parity in fp32
                x = batch.permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
                x = x.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    features = model(x)
                features = features[:n].float()
                norm = features.norm(dim=1)
                unit = features / norm.clamp_min(1e-12).unsqueeze(1)
                if cuda:  # back to pinned host memory without waiting for the GPU
                    unit = unit.to("cpu", non_blocking=True)
                    norm = norm.to("cpu", non_blocking=True)
                outputs[name] = unit, norm
                self.seconds["transfer"] += moved - started
                self.seconds["forward"] += time.perf_counter() - moved
            done = None
            if cuda:
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(self.device))  # the copies' device
        return _QueuedPart(outputs, done)


def _pad_batch(batch: torch.Tensor, size: int) -> torch.Tensor:
    import torch

    if len(batch) == size:
        return batch
    padding = batch.new_zeros((size - len(batch), *batch.shape[1:]))
    return torch.cat([batch, padding])


@dataclass
class _QueuedPart:
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]]  # backbone -> (unit, norm) on the host
    done: torch.cuda.Event | None  # recorded after the copies; None when computed already


class PendingEmbeddings:
    """A batch whose forward passes are queued on the device (see `Embedder.embed_async`)."""

    def __init__(self, parts: list[_QueuedPart], seconds: Counter[str]):
        self._parts = parts
        self._seconds = seconds

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        started = time.perf_counter()
        for part in self._parts:
            if part.done is not None:
                part.done.synchronize()
        self._seconds["forward"] += time.perf_counter() - started
        names = self._parts[0].outputs
        embeddings = {
            k: np.concatenate([p.outputs[k][0].numpy() for p in self._parts]) for k in names
        }
        norms = {k: np.concatenate([p.outputs[k][1].numpy() for p in self._parts]) for k in names}
        return embeddings, norms


def _stack(decoded: list[Decoded], pin: bool) -> dict[str, torch.Tensor]:
    import torch

    batch = {}
    for name in decoded[0].crops:
        tensor = torch.from_numpy(np.stack([d.crops[name] for d in decoded]))
        batch[name] = tensor.pin_memory() if pin else tensor
    return batch


class _HeapTrimmer:
    """Give freed heap pages back to the OS once resident memory has grown.

    glibc keeps freed pages, and fragmentation made RSS grow with the run's length (1.27x from 80
    to 800 images). Trimming after every batch fixed that but cost ~8 % of CPU throughput: each
    batch's activations were faulted in afresh. So the RSS after the first batch sets a limit
    `growth` above it, and the heap is trimmed only when RSS passes the limit.
    """

    def __init__(self, growth: float = 0.10):
        self.growth = growth
        self.limit: float | None = None
        self.trims = 0

    def __call__(self) -> None:
        rss = _resident_bytes()
        if _LIBC is None or rss is None:
            return
        if self.limit is None:
            self.limit = rss * (1 + self.growth)
        elif rss > self.limit:
            _LIBC.malloc_trim(0)
            self.trims += 1
            self.limit = max(self.limit, (_resident_bytes() or 0) * (1 + self.growth))


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _load_libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


def iter_embedded_batches(
    jobs: list[DecodeJob],
    embedder: Embedder,
    plans: list[CropPlan],
    *,
    batch_size: int,
    workers: int,
    max_pixels: int,
    decode_timeout: float,
    pillow_plugins: list[str] | None = None,
    reader: Callable[[str], bytes] | None = None,
    timings: Counter[str] | None = None,
    decode_on_device: bool = False,
) -> Iterator[BatchResult]:
    """Decode `jobs` and embed them, batch by batch.

    Pillow decodes in `workers` replaceable processes; with `decode_on_device`, JPEGs are decoded
    on the embedder's device first and only the rest (and what nvJPEG refuses) go to Pillow.
    `timings` gathers seconds: decode (summed over workers), wait_for_decode (this process idle),
    decode_on_device.
    """
    timings = Counter() if timings is None else timings
    release_freed_memory = _HeapTrimmer()
    jobs = list(jobs)  # the device's refusals join the Pillow jobs
    if decode_on_device:
        yield from _device_jpegs_first(
            jobs, embedder, plans, batch_size, reader, timings, release_freed_memory
        )
    pin = ahead = embedder.device.type == "cuda"  # on the CPU a batch is done when queued
    ready: list[Decoded] = []
    errors: list[tuple[str, str, str]] = []
    thumbnails: list[tuple[str, Thumbnail]] = []
    thumbnail_errors: list[tuple[str, str, str]] = []
    queued: _QueuedBatch | None = None  # on CUDA: computing while the next batch is gathered

    def submit() -> _QueuedBatch:
        nonlocal ready, errors, thumbnails, thumbnail_errors
        pending = embedder.embed_async(_stack(ready, pin)) if ready else None
        batch = _QueuedBatch([d.image_id for d in ready], pending, errors)
        batch.thumbnails, batch.thumbnail_errors = thumbnails, thumbnail_errors
        ready, errors, thumbnails, thumbnail_errors = [], [], [], []
        return batch

    # a deep queue lets the decoder run ahead through the forward passes' quieter moments:
    # 0.84 -> 0.92 of the forward-only rate at 64 -> 256 on 2 CPU cores
    window = max(256, 4 * batch_size)
    decoded_stream = iter_decoded(
        jobs, plans, workers=workers, timeout=decode_timeout, max_pixels=max_pixels,
        plugins=pillow_plugins, reader=reader, window=window,
    )  # fmt: skip
    while True:
        waited = time.perf_counter()
        decoded = next(decoded_stream, None)
        timings["wait_for_decode"] += time.perf_counter() - waited
        if decoded is None:
            break
        timings["decode"] += decoded.seconds
        _file_decoded(decoded, ready, errors, thumbnails, thumbnail_errors)
        if len(ready) >= batch_size:
            queued, previous = submit(), queued
            if not ahead:
                queued, previous = None, queued
            if previous is not None:
                yield previous.result()
                release_freed_memory()
        elif len(thumbnails) + len(thumbnail_errors) >= batch_size:
            # thumbnail-only jobs (nothing to embed) leave in batches of their own
            yield BatchResult([], {}, {}, thumbnails=thumbnails, thumbnail_errors=thumbnail_errors)
            thumbnails, thumbnail_errors = [], []
    if ready or errors or thumbnails or thumbnail_errors:
        queued, previous = submit(), queued
        if previous is not None:
            yield previous.result()
    if queued is not None:
        yield queued.result()


def _file_decoded(
    decoded: Decoded,
    ready: list[Decoded],
    errors: list[tuple[str, str, str]],
    thumbnails: list[tuple[str, Thumbnail]],
    thumbnail_errors: list[tuple[str, str, str]],
) -> None:
    """One decoded job to its lists: its thumbnail, then its crops to embed or its error (a
    thumbnail-only job's error is the thumbnail's)."""
    if decoded.thumbnail is not None:
        thumbnails.append((decoded.image_id, decoded.thumbnail))
    if not decoded.embed:  # a thumbnail-only job
        if decoded.error is not None:
            thumbnail_errors.append((decoded.image_id, *decoded.error))
    elif decoded.crops is None:
        errors.append((decoded.image_id, *decoded.error))
    else:
        ready.append(decoded)


def _device_jpegs_first(
    jobs: list[DecodeJob],
    embedder: Embedder,
    plans: list[CropPlan],
    batch_size: int,
    reader: Callable[[str], bytes] | None,
    timings: Counter[str],
    release_freed_memory: Callable[[], None],
) -> Iterator[BatchResult]:
    """Embed the JPEGs of `jobs` decoded on the device; `jobs` keeps the rest, and gets back what
    nvJPEG refuses. A thumbnail-only job goes to Pillow: nothing to embed on the device."""
    jpegs = [job for job in jobs if job.format == "JPEG" and job.crops]
    jobs[:] = [job for job in jobs if job.format != "JPEG" or not job.crops]
    for result, refused in _embed_jpegs_on_device(
        jpegs, embedder, plans, batch_size, reader, timings
    ):
        jobs.extend(refused)
        yield result
        release_freed_memory()


@dataclass
class _QueuedBatch:
    ok_ids: list[str]
    pending: PendingEmbeddings | None
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    refused: list[DecodeJob] = field(default_factory=list)  # for the Pillow workers
    thumbnails: list[tuple[str, Thumbnail]] = field(default_factory=list)
    thumbnail_errors: list[tuple[str, str, str]] = field(default_factory=list)
    # on the device path: (image_id, HWC uint8 pixels on the host) of the thumbnails, copied
    # behind the forward passes (complete once `result` has returned), to be encoded
    host_thumbnails: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def result(self) -> BatchResult:
        embeddings, norms = self.pending.result() if self.pending else ({}, {})
        return BatchResult(
            self.ok_ids, embeddings, norms, self.errors, self.thumbnails, self.thumbnail_errors
        )


def _embed_jpegs_on_device(
    jobs: list[DecodeJob],
    embedder: Embedder,
    plans: list[CropPlan],
    batch_size: int,
    reader: Callable[[str], bytes] | None,
    timings: Counter[str],
) -> Iterator[tuple[BatchResult, list[DecodeJob]]]:
    """Batches of JPEGs decoded on the device, one batch ahead of the forward passes.

    One thread keeps the device busy without threads contending for the GIL: while the GPU runs
    batch N's forward passes, this thread reads and decodes batch N+1 (nvJPEG runs on its own
    stream and hardware engines) and queues its forward passes before it waits for batch N.
    Threads read the bytes of the batch after that meanwhile.

    The thumbnails a job asks for are resized on the device and copied to the host behind the
    forward passes; the same threads encode them as JPEG once the batch is done, and they come
    with the next batch's result (the last ones with a result of their own).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from .decode import encode_thumbnail
    from .device_decode import crops_on_device, decode_jpegs, read_into_buffer

    def read(job: DecodeJob) -> bytearray | None:
        # a file that vanished or cannot be read goes to the Pillow workers, which record why
        try:
            if reader:
                return bytearray(reader(str(job.location)))
            return read_into_buffer(job.location)
        except OSError:
            return None

    def encode(image_id: str, pixels: torch.Tensor) -> tuple[str, Thumbnail]:
        return image_id, encode_thumbnail(pixels.numpy())

    encoding: list[Future] = []  # the previous batch's thumbnails, being encoded

    def finish(batch: _QueuedBatch) -> BatchResult:
        nonlocal encoding
        result = batch.result()  # after this the batch's thumbnails are on the host
        result.thumbnails = [future.result() for future in encoding]
        encoding = [pool.submit(encode, *item) for item in batch.host_thumbnails]
        return result

    chunks = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    queued: _QueuedBatch | None = None
    with ThreadPoolExecutor(max_workers=8) as pool:
        upcoming = [pool.submit(read, job) for job in chunks[0]] if chunks else []
        for index, chunk in enumerate(chunks):
            waited = time.perf_counter()
            payloads = [future.result() for future in upcoming]
            timings["wait_for_read"] += time.perf_counter() - waited
            if index + 1 < len(chunks):
                upcoming = [pool.submit(read, job) for job in chunks[index + 1]]
            started = time.perf_counter()
            images, ok, refused = decode_jpegs(payloads, str(embedder.device))
            crops = crops_on_device(images, plans) if images else {}
            wanted = [k for k, i in enumerate(ok) if chunk[i].thumbnail]
            host = _thumbnails_to_host([images[k] for k in wanted])
            del images
            timings["decode_on_device"] += time.perf_counter() - started
            batch = _QueuedBatch(
                [chunk[i].image_id for i in ok],
                embedder.embed_async(crops) if ok else None,
                refused=[chunk[i] for i in refused],
                host_thumbnails=[
                    (chunk[ok[k]].image_id, t) for k, t in zip(wanted, host, strict=True)
                ],
            )
            if queued is not None:
                yield finish(queued), queued.refused
            queued = batch
        if queued is not None:
            yield finish(queued), queued.refused
        if encoding:
            yield BatchResult([], {}, {}, thumbnails=[f.result() for f in encoding]), []


def _thumbnails_to_host(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Thumbnails of CHW uint8 device images as HWC uint8 host tensors. On CUDA, one copy into
    pinned memory, queued on the stream (not waited for): read them only once work queued after
    it (the batch's forward passes) is done."""
    if not images:
        return []
    import torch

    from .device_decode import thumbnails_on_device

    small = thumbnails_on_device(images)
    if small[0].device.type != "cuda":
        return small
    flat = torch.cat([t.reshape(-1) for t in small])
    host = torch.empty(flat.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(flat, non_blocking=True)
    out, start = [], 0
    for t in small:
        out.append(host[start : start + t.numel()].view(t.shape))
        start += t.numel()
    return out
