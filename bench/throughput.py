"""Throughput benchmark: measured in one run, reported as a table and JSON (not a test).

(a) forward-only limit: both backbones on uint8 crops already in memory, at the precision and
    layout embedlake picks for this machine (`--precision auto`, channels_last, BN folded);
(b) the naive baseline a user would write from timm's docs: Pillow decode + `create_transform`,
    fp32, one model after the other, batch 16;
(c) embedlake end to end with default settings (`embedlake run`, a subprocess, as users run it),
    JPEG files on disk -> Parquet, at two collection sizes: the marginal rate between them is the
    throughput, and what the small run costs beyond it is start-up. Done for 640x480 photos and
    for 12-megapixel photos. Per-stage seconds come from the run's own `runs.stage_seconds`; peak
    RSS is summed over the whole process tree (Prefect's server, decode workers) every 50 ms.

    python bench/throughput.py [--small 80 --large 800 --big-small 16 --big-large 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
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


def forward_limit(cache: Path, seconds: float = 20.0, batch: int = 16) -> dict:
    """(a): embed() on random uint8 crops, both backbones, as the pipeline configures them.

    The precision is `--precision auto`'s measured choice, cached in `cache`: the runs of (c)
    find it there, so neither pays the measurement inside the marginal rate.
    """
    import torch

    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.embed import Embedder
    from embedlake.tasks.precision import choose_precision
    from embedlake.tasks.weights import load_backbone, parse_weights_spec

    sources = parse_weights_spec("random", list(BACKBONES))
    loaded = [load_backbone(resolve_backbone(n), sources[n]) for n in BACKBONES]
    choice = choose_precision(loaded, "cpu", cache / "precision.json")
    print(f"    {choice.describe()}", flush=True)
    precision = choice.precision
    embedder = Embedder(loaded, "cpu", precision)
    crops = {
        b.spec.name: torch.randint(
            0, 256, (batch, b.spec.input_size, b.spec.input_size, 3), dtype=torch.uint8
        )
        for b in loaded
    }
    embedder.embed(crops)  # warm-up
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        embedder.embed(crops)
        n += batch
    elapsed = time.perf_counter() - started
    return {
        "images_per_second": n / elapsed,
        "precision": precision,
        "batch": batch,
        "images": n,
        "seconds": elapsed,
    }


def naive_baseline(paths: list[Path], batch: int = 16) -> dict:
    """(b): timm's documented recipe, fp32, one model after the other."""
    import torch
    from timm.data import create_transform, resolve_data_config

    from embedlake.tasks.backbones import build_model, resolve_backbone

    started = time.perf_counter()
    for name in BACKBONES:
        torch.manual_seed(0)
        model = build_model(resolve_backbone(name))
        transform = create_transform(**resolve_data_config(model=model))
        for i in range(0, len(paths), batch):
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + batch]])
            with torch.no_grad():
                model(x)
    elapsed = time.perf_counter() - started
    return {"images_per_second": len(paths) / elapsed, "images": len(paths), "seconds": elapsed}


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    for marker, role in (
        ("uvicorn", "prefect_server"),
        ("forkserver", "forkserver"),
        ("embedlake.flows.cli", "embedlake"),
    ):
        if marker in text:
            return role
    return "decode_worker"


def run_embedlake(source: Path, lake: Path, env: dict, extra: tuple[str, ...] = ()) -> dict:
    """(c): `embedlake run` in a subprocess; wall time, peak tree RSS, the run's own stages."""
    import duckdb
    import psutil

    command = [
        sys.executable,
        "-m",
        "embedlake.flows.cli",
        "run",
        str(source),
        "--lake",
        str(lake),
        "--weights",
        "random",
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak, peak_by_role = 0, {}
    while proc.poll() is None:
        total, by_role = 0, {}
        try:
            for p in [root, *root.children(recursive=True)]:
                rss = p.memory_info().rss
                total += rss
                role = _role(p.cmdline())
                by_role[role] = by_role.get(role, 0) + rss
        except psutil.Error:
            pass  # a process ended between listing and reading it: the next poll counts again
        if total > peak:
            peak, peak_by_role = total, by_role
        time.sleep(0.25)  # polling a process tree costs CPU: keep it off the measured cores
    wall = time.perf_counter() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"embedlake run failed: {err.decode()[-2000:]}")
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        row = con.execute(
            "SELECT n_embedded, images_per_second, stage_seconds, device, precision "
            "FROM runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    return {
        "wall_seconds": wall,
        "peak_rss_mb": peak / 2**20,
        "peak_rss_mb_by_process": {k: round(v / 2**20) for k, v in peak_by_role.items()},
        "n_embedded": row[0],
        "embed_rate_in_run": row[1],
        "stage_seconds": json.loads(row[2]),
        "device": row[3],
        "precision": row[4],
    }


def end_to_end(
    folder: Path, small: int, large: int, size: tuple[int, int], env: dict, work: Path, label: str
) -> dict:
    all_paths = make_photos(folder / "all", large, size)
    small_dir = folder / "small"
    small_dir.mkdir(parents=True, exist_ok=True)
    for p in all_paths[:small]:
        (small_dir / p.name).write_bytes(p.read_bytes())
    s = run_embedlake(small_dir, work / f"lake-{label}-small", env)
    big = run_embedlake(folder / "all", work / f"lake-{label}-large", env)
    marginal = (large - small) / (big["wall_seconds"] - s["wall_seconds"])
    return {
        "small": s,
        "large": big,
        "marginal_images_per_second": marginal,
        "startup_seconds": s["wall_seconds"] - small / marginal,
        "rss_ratio_large_over_small": big["peak_rss_mb"] / s["peak_rss_mb"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=80)
    parser.add_argument("--large", type=int, default=800)
    parser.add_argument("--big-small", type=int, default=16)
    parser.add_argument("--big-large", type=int, default=64)
    parser.add_argument("--naive-images", type=int, default=48)
    parser.add_argument("--forward-seconds", type=float, default=20.0)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    import torch

    env = dict(os.environ, HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory(prefix="embedlake-bench-") as tmp:
        work = Path(tmp)
        env["PREFECT_HOME"] = str(work / "prefect")
        env["EMBEDLAKE_CACHE"] = str(work / "cache")
        print("(a) forward-only limit ...", flush=True)
        results["a_forward_limit"] = forward_limit(work / "cache", args.forward_seconds)
        print("(b) naive baseline ...", flush=True)
        naive_paths = make_photos(work / "naive", args.naive_images, (640, 480))
        results["b_naive"] = naive_baseline(naive_paths)
        print("(c) embedlake end to end, 640x480 ...", flush=True)
        results["c_640x480"] = end_to_end(
            work / "p640", args.small, args.large, (640, 480), env, work, "640"
        )
        print("(c) embedlake end to end, 12 MP ...", flush=True)
        results["c_12mp"] = end_to_end(
            work / "p12", args.big_small, args.big_large, (4000, 3000), env, work, "12mp"
        )

    a = results["a_forward_limit"]["images_per_second"]
    b = results["b_naive"]["images_per_second"]
    c = results["c_640x480"]["marginal_images_per_second"]
    c12 = results["c_12mp"]["marginal_images_per_second"]
    results["ratios"] = {
        "c_over_a": c / a,
        "c_over_b": c / b,
        "c12mp_over_a": c12 / a,
        "rss_800_over_80": results["c_640x480"]["rss_ratio_large_over_small"],
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f"throughput-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out_file.write_text(json.dumps(results, indent=2))

    r = results
    lines = [
        f"{'measure':<46}{'images/s':>10}",
        f"{'(a) forward-only limit (' + r['a_forward_limit']['precision'] + ')':<46}{a:>10.2f}",
        f"{'(b) naive timm recipe (fp32, batch 16)':<46}{b:>10.2f}",
        f"{'(c) embedlake, 640x480 JPEG, marginal':<46}{c:>10.2f}",
        f"{'(c) embedlake, 12 MP JPEG, marginal':<46}{c12:>10.2f}",
        "",
        f"c/a = {c / a:.2f}   c/b = {c / b:.2f}   c(12MP)/a = {c12 / a:.2f}",
        f"start-up (640x480 small run): {r['c_640x480']['startup_seconds']:.1f} s",
        f"peak RSS: {r['c_640x480']['small']['peak_rss_mb']:.0f} MB for {args.small} images, "
        f"{r['c_640x480']['large']['peak_rss_mb']:.0f} MB for {args.large} "
        f"(ratio {r['ratios']['rss_800_over_80']:.2f})",
        f"stages, {args.large} x 640x480 (s): {r['c_640x480']['large']['stage_seconds']}",
        f"stages, {args.big_large} x 12 MP (s): {r['c_12mp']['large']['stage_seconds']}",
        f"JSON: {out_file}",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
