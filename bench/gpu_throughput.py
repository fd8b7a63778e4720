"""GPU throughput of the embedding engine, for a machine with CUDA (not a test; not run in CI).

Measures on one run, for each batch size: (a) the forward-only limit of both backbones on uint8
crops (from host memory, and already in GPU memory) at fp16, channels_last, folded BN; then the
engine end to end from JPEG files on disk to Parquet parts (tasks.embed.iter_embedded_batches +
tasks.lake) with nvJPEG decoding on the device, plus, as references, the same decode and forward
passes run one after the other (the engine before it queued batches one ahead) and Pillow
decoding in worker processes. The Prefect flow around the engine adds per-run start-up, not
per-image work (see bench/throughput.py for that on the CPU).

    python bench/gpu_throughput.py --images 8192 --batches 256,512
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import make_photos, save_result  # noqa: E402

BACKBONES = ("mobilenet_v1", "xception")


def _make(args: tuple[Path, int, int]) -> list[Path]:
    folder, n, seed = args
    return make_photos(folder / f"s{seed}", n, (640, 480))


def forward_limit(embedder, loaded, batch: int, seconds: float, on_gpu: bool) -> float:
    import torch

    crops = {
        b.spec.name: torch.randint(
            0, 256, (batch, b.spec.input_size, b.spec.input_size, 3), dtype=torch.uint8
        )
        for b in loaded
    }
    if on_gpu:
        crops = {k: v.cuda() for k, v in crops.items()}
    for _ in range(3):
        embedder.embed(crops)
    started, n = time.perf_counter(), 0
    pending = None
    while time.perf_counter() - started < seconds:
        queued = embedder.embed_async(crops)  # one ahead, as the engine runs
        if pending is not None:
            pending.result()
        pending = queued
        n += batch
    pending.result()
    return n / (time.perf_counter() - started)


def serial_nvjpeg(jobs, embedder, plans, batch: int) -> int:
    """Reference: decode a batch on the device, then embed it, then the next (no overlap)."""
    from embedlake.tasks.device_decode import decode_jpegs_on_device, read_into_buffer

    done = 0
    for i in range(0, len(jobs), batch):
        payloads = [read_into_buffer(j.location) for j in jobs[i : i + batch]]
        crops, ok, _ = decode_jpegs_on_device(payloads, "cuda", plans)
        embedder.embed(crops)
        done += len(ok)
    return done


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batches", default="256,512")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) - 1)
    parser.add_argument("--forward-seconds", type=float, default=6.0)
    parser.add_argument("--cudnn-benchmark", default="off,on", help="settings to measure")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument(
        "--no-references", action="store_true", help="skip the serial and Pillow references"
    )
    parser.add_argument("--out", default="bench/results/gpu.json")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    import torch

    from embedlake.tasks import lake
    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.decode import crop_plans
    from embedlake.tasks.decode_pool import DecodeJob
    from embedlake.tasks.discover import DEFAULT_MAX_PIXELS
    from embedlake.tasks.embed import Embedder, iter_embedded_batches
    from embedlake.tasks.weights import load_backbone, parse_weights_spec

    sources = parse_weights_spec("random", list(BACKBONES))
    loaded = [load_backbone(resolve_backbone(n), sources[n]) for n in BACKBONES]
    plans = crop_plans({b.spec.name: b.spec.data_config() for b in loaded})
    started = time.perf_counter()
    embedder = Embedder(loaded, "cuda", "fp16", compile=args.compile)
    for size in {int(b) for b in batches}:  # compile (when asked) outside the measurements
        embedder.embed(
            {
                b.spec.name: torch.zeros(
                    (size, b.spec.input_size, b.spec.input_size, 3), dtype=torch.uint8
                )
                for b in loaded
            }
        )
    torch.cuda.synchronize()
    result: dict = {
        "compiled": args.compile,
        "engine_setup_seconds": time.perf_counter() - started,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "images": args.images,
        "workers": args.workers,
        "precision": "fp16",
        "by_config": {},
    }

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        per = args.images // 16
        with Pool(16) as pool:
            paths = [
                p for chunk in pool.map(_make, [(work, per, s) for s in range(16)]) for p in chunk
            ]
        jobs = [DecodeJob(f"{i:08d}", p, "JPEG") for i, p in enumerate(paths)]
        root = lake.ensure_lake(work / "lake")

        def run(subset: list, label: str, batch: int, on_gpu: bool):
            timings: Counter[str] = Counter()
            embedder.seconds.clear()
            writer = lake.PartWriter(root / "embeddings", f"{label}-{batch}-{len(subset)}", 8192)
            started, done = time.perf_counter(), 0
            for out in iter_embedded_batches(
                subset,
                embedder,
                plans,
                batch_size=batch,
                workers=args.workers,
                max_pixels=DEFAULT_MAX_PIXELS,
                decode_timeout=30,
                decode_on_device=on_gpu,
                timings=timings,
            ):
                for name in BACKBONES if out.ok_ids else ():
                    writer.add(
                        lake.embeddings_table(
                            image_ids=out.ok_ids,
                            backbone=name,
                            weights_id="w",
                            precision="fp16",
                            vectors=out.embeddings[name],
                            norms=out.norms[name],
                            run_id=label,
                        )
                    )
                done += len(out.ok_ids)
            writer.close()
            timings["write"] = writer.seconds
            timings.update(embedder.seconds)
            return time.perf_counter() - started, done, timings

        def marginal(measure, small: int) -> dict:
            measure(jobs[:small])  # warm-up: cuDNN plans, page cache
            t_small = measure(jobs[:small])[0]
            t_all, done, timings = measure(jobs)
            rate = (len(jobs) - small) / (t_all - t_small)
            return {
                "marginal_images_per_second": rate,
                "startup_seconds": t_small - small / rate,
                "whole_run_images_per_second": done / t_all,
                "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
            }

        def serial(subset):
            started = time.perf_counter()
            done = serial_nvjpeg(subset, embedder, plans, batch)
            return time.perf_counter() - started, done, Counter()

        small = len(jobs) // 4
        for batch in batches:
            for autotune in [v == "on" for v in args.cudnn_benchmark.split(",")]:
                torch.backends.cudnn.benchmark = autotune
                row: dict = {}
                torch.cuda.empty_cache()
                row["a_forward_limit_from_host"] = forward_limit(
                    embedder, loaded, batch, args.forward_seconds, on_gpu=False
                )
                row["a_forward_limit_crops_on_gpu"] = forward_limit(
                    embedder, loaded, batch, args.forward_seconds, on_gpu=True
                )
                row["c_nvjpeg"] = marginal(lambda s, b=batch: run(s, "nvjpeg", b, True), small)
                if not autotune and not args.no_references:
                    row["c_nvjpeg_serial_reference"] = marginal(serial, small)
                row["c_nvjpeg_over_a_on_gpu"] = (
                    row["c_nvjpeg"]["marginal_images_per_second"]
                    / row["a_forward_limit_crops_on_gpu"]
                )
                key = f"batch={batch} cudnn.benchmark={autotune}"
                result["by_config"][key] = row
                print(json.dumps({key: row}, indent=1), flush=True)
        torch.backends.cudnn.benchmark = False
        if not args.no_references:
            result["c_pillow_workers"] = marginal(
                lambda s: run(s, "pillow", batches[0], False), len(jobs) // 8
            )
            result["c_pillow_workers"]["batch"] = batches[0]
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
