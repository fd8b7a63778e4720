"""Decode in worker processes that can be replaced: a file that hangs a decoder costs one worker.

pebble's ProcessPool kills a worker whose task outlives its timeout and starts a fresh one, which
multiprocessing's and DataLoader's pools cannot do; the file becomes a `timeout` error row and
the run goes on. At most `window` files are in flight, so memory does not grow with the run.
Results come back as they complete (order does not matter downstream). A job may also ask for
the image's thumbnail (`DecodeJob.thumbnail`), made from the same decode, or for the thumbnail
alone (`DecodeJob.crops` False: an image embedded before, decoded again only for its thumbnail).
"""

from __future__ import annotations

import importlib
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, TimeoutError, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decode import CropPlan, DecodeError, Thumbnail, decode_image

__all__ = ["DecodeJob", "Decoded", "load_pillow_plugins", "iter_decoded"]


@dataclass(frozen=True)
class DecodeJob:
    """One image to decode: a local path, or a name that `reader` turns into bytes."""

    image_id: str
    location: Path | str
    format: str | None = None  # from the header, so JPEGs can go to the device decoder
    thumbnail: bool = False  # make its thumbnail too (the lake lacks one)
    crops: bool = True  # False: the thumbnail only (its embeddings are in the lake)


@dataclass
class Decoded:
    image_id: str
    crops: dict[str, np.ndarray] | None  # {} for a thumbnail-only job
    error: tuple[str, str] | None = None
    seconds: float = 0.0  # decode time in the worker
    thumbnail: Thumbnail | None = None
    embed: bool = True  # False: a thumbnail-only job (nothing to embed)


def load_pillow_plugins(specs: list[str]) -> None:
    """Import Pillow plugins: `module` or `module:register_function` (e.g. HEIF support)."""
    for spec in specs:
        module_name, _, function = spec.partition(":")
        module = importlib.import_module(module_name)
        if function:
            getattr(module, function)()


_PLANS: list[CropPlan] = []
_MAX_PIXELS = 0


def _init_worker(plans: list[CropPlan], max_pixels: int, plugins: list[str]) -> None:
    global _PLANS, _MAX_PIXELS
    _PLANS, _MAX_PIXELS = plans, max_pixels
    load_pillow_plugins(plugins)


def _decode_in_worker(
    file: Path | bytes, thumbnail: bool = False, crops: bool = True
) -> tuple[tuple[dict[str, np.ndarray], Thumbnail | None] | tuple[str, str], float]:
    started = time.perf_counter()
    try:
        result = decode_image(file, _PLANS if crops else [], _MAX_PIXELS, thumbnail=thumbnail)
    except DecodeError as exc:
        result = exc.code, exc.message
    return result, time.perf_counter() - started


def _decode_here(
    file: Path | bytes, job: DecodeJob, plans: list[CropPlan], max_pixels: int
) -> Decoded:
    started = time.perf_counter()
    try:
        crops, thumb = decode_image(
            file, plans if job.crops else [], max_pixels, thumbnail=job.thumbnail
        )
    except DecodeError as exc:
        return Decoded(job.image_id, None, (exc.code, exc.message), embed=job.crops)
    return Decoded(job.image_id, crops, None, time.perf_counter() - started, thumb, job.crops)


def iter_decoded(
    jobs: list[DecodeJob],
    plans: list[CropPlan],
    *,
    workers: int,
    timeout: float,
    max_pixels: int,
    plugins: list[str] | None = None,
    reader: Callable[[str], bytes] | None = None,
    window: int = 64,
) -> Iterator[Decoded]:
    """Crops (or the error) for every job; `workers=0` decodes here, without a time limit.

    With a `reader`, each job's location is read into bytes here, just before it is scheduled.
    """
    plugins = plugins or []

    def payload(job: DecodeJob) -> Path | bytes:
        return reader(str(job.location)) if reader else job.location

    def unreadable(job: DecodeJob, exc: OSError) -> Decoded:
        error = ("unreadable", f"{type(exc).__name__}: {exc}")
        return Decoded(job.image_id, None, error, embed=job.crops)

    if workers == 0:
        load_pillow_plugins(plugins)
        for job in jobs:
            try:
                data = payload(job)
            except OSError as exc:  # gone or unreadable since it was discovered
                yield unreadable(job, exc)
                continue
            yield _decode_here(data, job, plans, max_pixels)
        return

    from pebble import ProcessPool

    # forkserver: workers must not inherit the parent's threads (Prefect, torch) through fork()
    context = multiprocessing.get_context("forkserver")
    # each worker unpickles the plans' timm stages (torchvision: 4-5 s of imports here), so the
    # fork server imports them once, when it starts, and every worker it forks has them: pools
    # after the first (similar's, a killed worker's replacement, a long-lived process's next
    # run) start in milliseconds. Read only when the server starts; harmless after.
    context.set_forkserver_preload([__name__, "torchvision.transforms"])
    with ProcessPool(
        max_workers=workers,
        initializer=_init_worker,
        initargs=(plans, max_pixels, plugins),
        context=context,
    ) as pool:
        pending = {}
        queue = iter(jobs)
        try:
            while True:
                while len(pending) < window:
                    job = next(queue, None)
                    if job is None:
                        break
                    try:
                        data = payload(job)
                    except OSError as exc:  # gone or unreadable since it was discovered
                        yield unreadable(job, exc)
                        continue
                    future = pool.schedule(
                        _decode_in_worker, args=(data, job.thumbnail, job.crops), timeout=timeout
                    )
                    pending[future] = job
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    yield _outcome(job, future, timeout)
        finally:
            pool.stop()


def _outcome(job: DecodeJob, future, timeout: float) -> Decoded:
    try:
        result, seconds = future.result()
    except TimeoutError:
        error = ("timeout", f"decoding took over {timeout:g} s")
        return Decoded(job.image_id, None, error, embed=job.crops)
    except Exception as exc:  # the worker died (a decoder crashed the process): an error row
        error = ("corrupt", f"decoder crashed: {type(exc).__name__}: {exc}")
        return Decoded(job.image_id, None, error, embed=job.crops)
    if isinstance(result[0], str):
        return Decoded(job.image_id, None, result, seconds, embed=job.crops)
    crops, thumb = result
    return Decoded(job.image_id, crops, None, seconds, thumb, job.crops)
