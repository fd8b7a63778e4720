"""GPU throughput of the embedding engine, for a machine with CUDA (not a test; not run in CI).

Measures on one run: (a) the forward-only limit of both backbones on uint8 crops in GPU memory at
fp16, channels_last, folded BN; then the engine end to end from JPEG files on disk to Parquet
parts (tasks.embed.iter_embedded_batches + tasks.lake), with Pillow decoding in worker processes
and with nvJPEG decoding on the device. The Prefect flow around the engine adds per-run start-up,
not per-image work (see bench/throughput.py for that on the CPU).

    python bench/gpu_throughput.py --images 4096 --batch 256
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
from throughput import make_photos  # noqa: E402

BACKBONES = ("mobilenet_v1", "xception")


def _make(args: tuple[Path, int, int]) -> list[Path]:
    folder, n, seed = args
    return make_photos(folder / f"s{seed}", n, (640, 480))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 2) - 1)
    parser.add_argument("--out", default="bench/results/gpu.json")
    args = parser.parse_args()

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
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "batch": args.batch,
        "workers": args.workers,
    }

    embedder = Embedder(loaded, "cuda", "fp16")
    crops = {
        b.spec.name: torch.randint(
            0, 256, (args.batch, b.spec.input_size, b.spec.input_size, 3), dtype=torch.uint8
        )
        for b in loaded
    }
    for _ in range(3):
        embedder.embed(crops)
    torch.cuda.synchronize()
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < 10:
        embedder.embed(crops)
        n += args.batch
    result["a_forward_limit_images_per_second"] = n / (time.perf_counter() - started)
    on_device = {k: v.cuda() for k, v in crops.items()}
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < 10:
        embedder.embed(on_device)
        n += args.batch
    result["a_forward_limit_crops_on_gpu_images_per_second"] = n / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        per = args.images // 16
        with Pool(16) as pool:
            paths = [
                p for chunk in pool.map(_make, [(work, per, s) for s in range(16)]) for p in chunk
            ]
        jobs = [DecodeJob(f"{i:08d}", p, "JPEG") for i, p in enumerate(paths)]
        root = lake.ensure_lake(work / "lake")

        def run(subset: list, label: str, on_gpu: bool) -> tuple[float, int, Counter]:
            timings: Counter[str] = Counter()
            embedder.seconds.clear()
            writer = lake.PartWriter(root / "embeddings", f"{label}-{len(subset)}", 8192)
            started, done = time.perf_counter(), 0
            batches = iter_embedded_batches(
                subset,
                embedder,
                plans,
                batch_size=args.batch,
                workers=args.workers,
                max_pixels=DEFAULT_MAX_PIXELS,
                decode_timeout=30,
                decode_on_device=on_gpu,
                timings=timings,
            )
            for batch in batches:
                for name in BACKBONES if batch.ok_ids else ():
                    writer.add(
                        lake.embeddings_table(
                            image_ids=batch.ok_ids,
                            backbone=name,
                            weights_id="w",
                            precision="fp16",
                            vectors=batch.embeddings[name],
                            norms=batch.norms[name],
                            run_id=label,
                        )
                    )
                done += len(batch.ok_ids)
            writer.close()
            timings["write"] = writer.seconds
            timings.update(embedder.seconds)
            return time.perf_counter() - started, done, timings

        small = len(jobs) // 4
        for label, on_gpu in (("pillow_workers", False), ("nvjpeg", True)):
            run(jobs[: args.batch], label, on_gpu)  # warm-up: cuDNN plans, page cache
            t_small, _, _ = run(jobs[:small], label, on_gpu)
            t_all, done, timings = run(jobs, label, on_gpu)
            marginal = (len(jobs) - small) / (t_all - t_small)
            result[f"c_{label}_marginal_images_per_second"] = marginal
            result[f"c_{label}_startup_seconds"] = t_small - small / marginal
            result[f"c_{label}_whole_run_images_per_second"] = done / t_all
            result[f"c_{label}_stage_seconds"] = {k: round(v, 3) for k, v in timings.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
