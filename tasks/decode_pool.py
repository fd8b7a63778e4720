"""Decode in worker processes that can be replaced: a file that hangs a decoder costs one worker.

pebble's ProcessPool kills a worker whose task outlives its timeout and starts a fresh one, which
multiprocessing's and DataLoader's pools cannot do; the file becomes a `timeout` error row and
the run goes on. At most `window` files are in flight, so memory does not grow with the run.
Results come back as they complete (order does not matter downstream).
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

from .decode import CropPlan, DecodeError, decode_for_backbones

__all__ = ["DecodeJob", "Decoded", "load_pillow_plugins", "iter_decoded"]


@dataclass(frozen=True)
class DecodeJob:
    """One image to decode: a local path, or a name that `reader` turns into bytes."""

    image_id: str
    location: Path | str
    format: str | None = None  # from the header, so JPEGs can go to the device decoder


@dataclass
class Decoded:
    image_id: str
    crops: dict[str, np.ndarray] | None
    error: tuple[str, str] | None = None
    seconds: float = 0.0  # decode time in the worker


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


def _decode_in_worker(file: Path | bytes) -> tuple[dict[str, np.ndarray] | tuple[str, str], float]:
    started = time.perf_counter()
    try:
        result = decode_for_backbones(file, _PLANS, _MAX_PIXELS)
    except DecodeError as exc:
        result = exc.code, exc.message
    return result, time.perf_counter() - started


def _decode_here(
    file: Path | bytes, job: DecodeJob, plans: list[CropPlan], max_pixels: int
) -> Decoded:
    try:
        return Decoded(job.image_id, decode_for_backbones(file, plans, max_pixels))
    except DecodeError as exc:
        return Decoded(job.image_id, None, (exc.code, exc.message))


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
        return Decoded(job.image_id, None, ("unreadable", f"{type(exc).__name__}: {exc}"))

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
                    future = pool.schedule(_decode_in_worker, args=(data,), timeout=timeout)
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
        return Decoded(job.image_id, None, ("timeout", f"decoding took over {timeout:g} s"))
    except Exception as exc:  # the worker died (a decoder crashed the process): an error row
        return Decoded(
            job.image_id, None, ("corrupt", f"decoder crashed: {type(exc).__name__}: {exc}")
        )
    if isinstance(result, tuple):
        return Decoded(job.image_id, None, result, seconds)
    return Decoded(job.image_id, result, None, seconds)
