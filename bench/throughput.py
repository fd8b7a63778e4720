"""Throughput benchmark on the CPU: steady-state rates measured in one process (not a test).

Everything except peak RSS is measured inside this one process, as images/s over a window that
starts after a warm-up, so one-off costs (imports, building models, `--precision auto`'s
measurement, starting the decode worker) stay out of every rate:

(a) the forward-only limit: both backbones on uint8 crops already in memory, at the precision
    `--precision auto` picks here, channels_last, BN folded (the engine's own `Embedder`), batch
    16. The crops are the ones the engine makes from the same photos as (c). Measured just before
    and just after each (c) window; the mean of the two is the limit that (c) is set against.
(b) the naive recipe a user would write from timm's docs: Pillow + `create_transform`, fp32, one
    model after the other, batch 16. Models are built and warmed up (one batch) outside the
    timed region.
(c) embedlake's engine end to end, as `embedlake run` drives it on this machine: JPEG files on
    disk -> decode workers (draft decoding for big JPEGs) -> crops -> forward -> Parquet parts
    (`iter_embedded_batches` + `PartWriter`, with the run's defaults for batch size, decode
    workers and part size). The first `--warmup-batches` batches are skipped; the window then
    lasts `--seconds`, and ends while the decode queue is still full (the job list cycles over
    the photos, so the stream never drains inside the window). Done for 640x480 photos and for
    12-megapixel phone-sized photos (4032x3024), which decode at a reduced JPEG scale.
Peak RSS: a full `embedlake run` (subprocess) of N and 10N 640x480 photos, summed over its process
tree (see bench/tree_rss.py for the sampling interval and the two bounds).

    python bench/throughput.py [--seconds 30 --photos 800 --rss-small 80]
    python bench/throughput.py --show bench/measured/cpu-throughput.json   # a result's table
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

import embedlake.tasks  # noqa: F401  (before torch: the same allocator settings as the CLI)

PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "immunohistochemistry.png",
)
BACKBONES = ("mobilenet_v1", "xception")
BATCH = 16  # the engine's CPU batch size (tasks.steps), and the naive recipe's
PHONE_PHOTO = (4032, 3024)  # 12 MP, a phone camera's 4:3 frame


def _sources() -> list[Image.Image]:
    images = []
    for name in PHOTOS:
        try:
            data = resources.files("skimage.data").joinpath(name).read_bytes()
        except FileNotFoundError:
            continue
        images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return images


def make_photos(folder: Path, n: int, size: tuple[int, int], quality: int = 90) -> list[Path]:
    """`n` distinct JPEGs of `size`: random crops of the bundled photos, seeded."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n * size[0])
    sources = _sources()
    paths = []
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = img.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        path = folder / f"img_{i:05d}.jpg"
        out.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def save_result(result: dict, out: str | Path) -> None:
    """A bench's JSON: written to `out` (folders made) and printed."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


class Engine:
    """The backbones, crop plans and `Embedder` a CPU run builds, and the run's defaults."""

    def __init__(self, cache: Path):
        from embedlake.tasks.backbones import resolve_backbone
        from embedlake.tasks.decode import crop_plans
        from embedlake.tasks.embed import Embedder
        from embedlake.tasks.engine import decode_workers
        from embedlake.tasks.params import RunParams
        from embedlake.tasks.precision import choose_precision
        from embedlake.tasks.weights import load_backbone, parse_weights_spec

        sources = parse_weights_spec("random", list(BACKBONES))
        self.loaded = [load_backbone(resolve_backbone(n), sources[n]) for n in BACKBONES]
        self.choice = choose_precision(self.loaded, "cpu", cache / "precision.json")
        self.embedder = Embedder(self.loaded, "cpu", self.choice.precision)
        self.plans = crop_plans({b.spec.name: b.spec.data_config() for b in self.loaded})
        self.params = RunParams(source=".")
        self.workers = decode_workers(self.params.workers)

    def crops(self, paths: list[Path]) -> dict:
        """One batch of the engine's own uint8 crops of `paths` (decoded here)."""
        import torch

        from embedlake.tasks.decode import decode_for_backbones

        decoded = [decode_for_backbones(p, self.plans, self.params.max_pixels) for p in paths]
        return {k: torch.from_numpy(np.stack([d[k] for d in decoded])) for k in decoded[0]}


def forward_limit(engine: Engine, crops: dict, seconds: float) -> dict:
    """(a): the engine's forward passes alone, on `crops`, after two warm-up batches."""
    for _ in range(2):
        engine.embedder.embed(crops)
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        engine.embedder.embed(crops)
        n += len(next(iter(crops.values())))
    elapsed = time.perf_counter() - started
    return {"images_per_second": n / elapsed, "images": n, "seconds": elapsed}


def engine_rate(
    engine: Engine, paths: list[Path], work: Path, seconds: float, warmup_batches: int
) -> dict:
    """(c): decode workers -> crops -> forward -> Parquet, images/s over a steady window."""
    from embedlake.tasks import lake
    from embedlake.tasks.decode_pool import DecodeJob
    from embedlake.tasks.embed import iter_embedded_batches

    # enough jobs that the decoder is still busy when the window closes (at 3x the limit)
    n_jobs = (warmup_batches + 32) * BATCH + int(seconds * 100)
    jobs = [DecodeJob(f"{i:064x}", paths[i % len(paths)], "JPEG") for i in range(n_jobs)]
    root = lake.ensure_lake(work / "lake")
    writer = lake.PartWriter(root / "embeddings", work.name, engine.params.part_rows)
    timings: Counter[str] = Counter()
    engine.embedder.seconds.clear()
    stream = iter_embedded_batches(
        jobs,
        engine.embedder,
        engine.plans,
        batch_size=BATCH,
        workers=engine.workers,
        max_pixels=engine.params.max_pixels,
        decode_timeout=engine.params.decode_timeout,
        timings=timings,
    )
    started = marked = None
    n = 0
    for index, batch in enumerate(stream):
        if batch.errors:
            raise RuntimeError(f"decode errors in the benchmark's photos: {batch.errors[:3]}")
        for name in BACKBONES:
            writer.add(
                lake.embeddings_table(
                    image_ids=batch.ok_ids,
                    backbone=name,
                    weights_id="random",
                    precision=engine.choice.precision,
                    vectors=batch.embeddings[name],
                    norms=batch.norms[name],
                    run_id=work.name,
                )
            )
        if index + 1 == warmup_batches:
            started = time.perf_counter()
            marked = Counter(timings) + Counter(engine.embedder.seconds)
        elif started is not None:
            n += len(batch.ok_ids)
            if time.perf_counter() - started >= seconds:
                break
    writer.close()  # the window pays for writing what it embedded (and the warm-up's rows)
    elapsed = time.perf_counter() - started
    stage = Counter(timings) + Counter(engine.embedder.seconds)
    stage.subtract(marked)
    stream.close()  # stops the decode workers
    if n_jobs - (warmup_batches * BATCH + n) < 256:
        raise RuntimeError("the job list ran short: the decode queue drained inside the window")
    return {
        "images_per_second": n / elapsed,
        "images": n,
        "seconds": elapsed,
        "warmup_batches": warmup_batches,
        "decode_workers": engine.workers,
        "distinct_files": len(paths),
        "window_stage_seconds": {k: round(v, 3) for k, v in sorted(stage.items())},
    }


def decode_cost(engine: Engine, paths: list[Path]) -> dict:
    """CPU ms per image (this process, best of two passes): the JPEG decode alone (at the scale
    the engine's draft decoding picks), and all of `decode_for_backbones` (decode, both crops)."""
    from embedlake.tasks.decode import decode_for_backbones, draft_jpeg

    short_side = max(p.resize_short_side for p in engine.plans)

    def jpeg_only(path: Path) -> None:
        with Image.open(path) as img:
            draft_jpeg(img, short_side)
            img.load()

    def crops(path: Path) -> None:
        decode_for_backbones(path, engine.plans, engine.params.max_pixels)

    cost = {}
    for name, fn in (("jpeg_decode_ms", jpeg_only), ("decode_and_crops_ms", crops)):
        best = float("inf")
        for _ in range(2):
            started = time.process_time()
            for path in paths:
                fn(path)
            best = min(best, (time.process_time() - started) / len(paths) * 1e3)
        cost[name] = best
    return cost


def measure_resolution(engine: Engine, paths: list[Path], work: Path, args) -> dict:
    """(a) before, (c), (a) after: the limit (c) is set against is the mean of the two (a)s.

    `ceiling_c_over_a`: what (c)/(a) can reach when decoding takes its CPU time from the cores
    the forward passes use (`torch_threads` of them, assumed fully busy in (a)):
    1 / (1 + a * decode seconds per image / torch_threads).
    """
    import torch

    crops = engine.crops(paths[:BATCH])
    cost = decode_cost(engine, paths[:BATCH])
    before = forward_limit(engine, crops, args.forward_seconds)
    print(f"    (a) before: {before['images_per_second']:.2f} images/s", flush=True)
    c = engine_rate(engine, paths, work, args.seconds, args.warmup_batches)
    print(f"    (c): {c['images_per_second']:.2f} images/s", flush=True)
    after = forward_limit(engine, crops, args.forward_seconds)
    print(f"    (a) after: {after['images_per_second']:.2f} images/s", flush=True)
    a = (before["images_per_second"] + after["images_per_second"]) / 2
    return {
        "a_forward_limit": {"images_per_second": a, "before": before, "after": after},
        "c_engine": c,
        "c_over_a": c["images_per_second"] / a,
        "decode_cpu_cost": cost,
        "ceiling_c_over_a": 1
        / (1 + a * cost["decode_and_crops_ms"] / 1e3 / torch.get_num_threads()),
    }


def naive_baseline(paths: list[Path], batch: int = BATCH) -> dict:
    """(b): timm's documented recipe, fp32, one model after the other; models built untimed."""
    import torch
    from timm.data import create_transform, resolve_data_config

    from embedlake.tasks.backbones import build_model, resolve_backbone

    seconds = {}
    for name in BACKBONES:
        torch.manual_seed(0)
        model = build_model(resolve_backbone(name)).eval()
        transform = create_transform(**resolve_data_config(model=model))

        def run(chunk: list[Path], model=model, transform=transform) -> None:
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p in chunk])
            with torch.no_grad():
                model(x)

        run(paths[:batch])  # warm-up, untimed
        started = time.perf_counter()
        for i in range(0, len(paths), batch):
            run(paths[i : i + batch])
        seconds[name] = time.perf_counter() - started
    total = sum(seconds.values())
    return {
        "images_per_second": len(paths) / total,
        "images": len(paths),
        "seconds": total,
        "seconds_per_model": seconds,
    }


def peak_rss(paths: list[Path], small: int, work: Path, env: dict) -> dict:
    """A full `embedlake run` of the first `small` photos, then of all of them (10x)."""
    from tree_rss import run_embedlake

    runs = {}
    for n in (small, len(paths)):
        source = work / f"rss-{n}"
        source.mkdir()
        for p in paths[:n]:
            shutil.copyfile(p, source / p.name)
        print(f"    embedlake run, {n} images ...", flush=True)
        runs[str(n)] = run_embedlake(source, work / f"lake-rss-{n}", env)
    large = runs[str(len(paths))]["peak_rss_mb"]
    return {"runs": runs, "ratio_large_over_small": large / runs[str(small)]["peak_rss_mb"]}


STEADY = 0.10  # (a) before and after a window further apart than this: the machine was busy


def spread(limit: dict) -> float:
    """How far (a) moved across a (c) window, relative to their mean."""
    before, after = limit["before"]["images_per_second"], limit["after"]["images_per_second"]
    return abs(before - after) / limit["images_per_second"]


def table(r: dict) -> str:
    """The table the README quotes, from a result of `main`."""
    p640, p12 = r["c_640x480"], r["c_12mp"]
    a = p640["a_forward_limit"]["images_per_second"]
    a12 = p12["a_forward_limit"]["images_per_second"]
    rss = r["peak_rss"]["runs"]
    (n_small, small), (n_large, large) = sorted(rss.items(), key=lambda kv: int(kv[0]))
    b = r["b_naive"]["images_per_second"]
    c, c12 = p640["c_engine"]["images_per_second"], p12["c_engine"]["images_per_second"]
    precision = r["precision"]
    rows = [
        (f"(a) forward-only limit ({precision}, 640x480 photos' crops)", a, 1.0),
        ("(b) naive timm recipe (Pillow, create_transform, fp32)", b, b / a),
        (f"(c) embedlake engine ({precision}), 640x480 JPEGs -> Parquet", c, p640["c_over_a"]),
        (f"(a) forward-only limit ({precision}, 12 MP photos' crops)", a12, 1.0),
        (f"(c) embedlake engine ({precision}), 12 MP JPEGs -> Parquet", c12, p12["c_over_a"]),
    ]
    costs = [
        f"{label}: decode and crops {p['decode_cpu_cost']['decode_and_crops_ms']:.1f} CPU ms per "
        f"image (JPEG decode alone {p['decode_cpu_cost']['jpeg_decode_ms']:.1f}), so (c)/(a) "
        f"can reach {p['ceiling_c_over_a']:.2f} on these cores; in (c)'s window the forward "
        f"passes took {p['c_engine']['window_stage_seconds']['forward']:.1f} of "
        f"{p['c_engine']['seconds']:.1f} s"
        for label, p in (("640x480", p640), ("12 MP", p12))
    ]
    lines = [
        f"{r.get('precision_choice', '?')}; "
        f"native bf16 on this CPU: {r.get('cpu_native_bf16', '?')}",
        f"{r['cpu_count']} CPU cores, {r['torch_threads']} torch threads, "
        f"{r['c_640x480']['c_engine']['decode_workers']} decode worker(s), batch {BATCH}, "
        f"windows of {r['args']['seconds']:g} s (c) and {r['args']['forward_seconds']:g} s (a)",
        f"{'measure':<58}{'images/s':>10}{'x (a)':>8}",
        *(f"{name:<58}{rate:>10.2f}{ratio:>8.2f}" for name, rate, ratio in rows),
        *costs,
        *(
            f"{label}: (a) moved {spread(p['a_forward_limit']):.0%} between before and after the "
            f"(c) window (over {STEADY:.0%}): the machine was busy, so its rates and ratios are "
            "not figures to quote"
            for label, p in (("640x480", p640), ("12 MP", p12))
            if spread(p["a_forward_limit"]) > STEADY
        ),
        f"peak RSS of `embedlake run` (process tree, sampled every "
        f"{small['rss_sample_interval_seconds']:g} s): {n_small} images {small['peak_rss_mb']:,.0f}"
        f" MiB, {n_large} images {large['peak_rss_mb']:,.0f} MiB "
        f"(ratio {r['peak_rss']['ratio_large_over_small']:.2f}; per-process peaks summed: "
        f"{small['peak_rss_mb_hwm_sum']:,.0f} and {large['peak_rss_mb_hwm_sum']:,.0f} MiB)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="(c) window")
    parser.add_argument("--forward-seconds", type=float, default=15.0, help="each (a) window")
    parser.add_argument("--warmup-batches", type=int, default=8)
    parser.add_argument("--photos", type=int, default=800, help="distinct 640x480 photos")
    parser.add_argument("--photos-12mp", type=int, default=64, help="distinct 12 MP photos")
    parser.add_argument("--naive-images", type=int, default=64)
    parser.add_argument("--rss-small", type=int, default=80, help="N; 10N is --photos")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--show", metavar="JSON", help="print the table of a saved result")
    args = parser.parse_args()
    if args.show:
        print(table(json.loads(Path(args.show).read_text())))
        return 0

    import torch

    from embedlake.tasks.embed import cpu_has_native_bf16

    env = dict(os.environ, HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(),
        "args": vars(args),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg_at_start": os.getloadavg(),  # other work on the machine, 1/5/15 min
    }
    # written again after each stage, so a late failure (a run's Prefect server) keeps the rates
    out_file = Path(args.out) / f"throughput-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="embedlake-bench-") as tmp:
        work = Path(tmp)
        env["PREFECT_HOME"] = str(work / "prefect")
        env["EMBEDLAKE_CACHE"] = os.environ["EMBEDLAKE_CACHE"] = str(work / "cache")
        print("photos ...", flush=True)
        p640 = make_photos(work / "p640", args.photos, (640, 480))
        p12 = make_photos(work / "p12mp", args.photos_12mp, PHONE_PHOTO)
        engine = Engine(work / "cache")
        print(f"    {engine.choice.describe()}", flush=True)
        results["precision"] = engine.choice.precision
        results["precision_choice"] = engine.choice.describe()
        results["cpu_native_bf16"] = cpu_has_native_bf16()
        print("(a), (c) 640x480 ...", flush=True)
        results["c_640x480"] = measure_resolution(engine, p640, work / "c640", args)
        out_file.write_text(json.dumps(results, indent=2))
        print("(a), (c) 12 MP ...", flush=True)
        results["c_12mp"] = measure_resolution(engine, p12, work / "c12mp", args)
        out_file.write_text(json.dumps(results, indent=2))
        del engine
        print("(b) naive recipe ...", flush=True)
        results["b_naive"] = naive_baseline(p640[: args.naive_images])
        print("peak RSS ...", flush=True)
        results["peak_rss"] = peak_rss(p640, args.rss_small, work, env)

    results["loadavg_at_end"] = os.getloadavg()
    out_file.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"JSON: {out_file}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
