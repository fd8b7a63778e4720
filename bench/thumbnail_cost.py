"""What a thumbnail costs at decode time: bytes per image, and CPU milliseconds per image.

For each image, on the decode's own path (`tasks.decode.decode_image`, the default backbones'
crop plans, mobilenet_v1 and xception): the thumbnail's JPEG bytes, and

- thumbnail_ms: CPU time (this thread's, `time.thread_time`) of `make_thumbnail` on the oriented
  RGB image the crops come from (for a large JPEG, its drafted decode: 504x378 from 12 MP), the
  minimum of `--repeats` (the cost itself, with other processes' load kept out as far as a
  thread's CPU clock can);
- decode_ms / decode_with_thumbnail_ms: CPU time of the whole decode (crops) without and with
  the thumbnail, the median of `--repeats` each, interleaved; their difference is a cross-check
  of thumbnail_ms (noisier: two medians of a 5-25 ms decode);
- thumbnail_only_ms: a decode for the thumbnail alone (an image embedded before thumbnails
  existed: drafted to the thumbnail's own scale, 1/8 for 12 MP).

On two collections: the bundled sample (`data.sample`, every decodable image: PNGs and JPEGs,
256x256 to 1024x1024) and 12 MP phone-sized JPEGs (4032x3024, quality 90, made as
bench/throughput.py makes them). Means over images.

    python bench/thumbnail_cost.py [--photos-12mp 16 --repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageOps

import embedlake.tasks  # noqa: F401  (before torch: the same allocator settings as the CLI)


def _cpu_ms(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        fn()
        times.append((time.thread_time() - started) * 1000)
    return times


def _oriented(path: Path, plans) -> Image.Image:
    """The RGB image decode_image makes its crops (and thumbnail) from."""
    from embedlake.tasks.decode import draft_jpeg, to_rgb

    with Image.open(path) as img:
        if img.format == "JPEG":
            draft_jpeg(img, max(p.resize_short_side for p in plans))
        img.seek(0)
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))


def measure(paths: list[Path], plans, repeats: int) -> dict:
    from embedlake.tasks.decode import DecodeError, decode_image, make_thumbnail
    from embedlake.tasks.discover import DEFAULT_MAX_PIXELS

    rows = []
    for path in paths:
        try:
            _, thumb = decode_image(path, plans, DEFAULT_MAX_PIXELS, thumbnail=True)
        except DecodeError:
            continue
        rgb = _oriented(path, plans)
        without, with_ = [], []
        for _ in range(repeats):  # interleaved, so load drifts hit both alike
            without += _cpu_ms(lambda p=path: decode_image(p, plans, DEFAULT_MAX_PIXELS), 1)
            with_ += _cpu_ms(
                lambda p=path: decode_image(p, plans, DEFAULT_MAX_PIXELS, thumbnail=True), 1
            )
        only = _cpu_ms(
            lambda p=path: decode_image(p, [], DEFAULT_MAX_PIXELS, thumbnail=True), repeats
        )
        with Image.open(path) as img:
            size = img.size
        rows.append(
            {
                "name": path.name,
                "size": list(size),
                "decoded_from": list(rgb.size),
                "thumbnail": [thumb.width, thumb.height],
                "bytes": len(thumb.data),
                "thumbnail_ms": min(_cpu_ms(lambda r=rgb: make_thumbnail(r), repeats)),
                "decode_ms": statistics.median(without),
                "decode_with_thumbnail_ms": statistics.median(with_),
                "thumbnail_only_ms": statistics.median(only),
            }
        )

    def mean(key: str) -> float:
        return round(statistics.fmean(r[key] for r in rows), 3)

    return {
        "n_images": len(rows),
        "bytes_per_image_mean": round(statistics.fmean(r["bytes"] for r in rows)),
        "bytes_per_image_max": max(r["bytes"] for r in rows),
        "thumbnail_ms_mean": mean("thumbnail_ms"),
        "thumbnail_ms_max": round(max(r["thumbnail_ms"] for r in rows), 3),
        "decode_ms_mean": mean("decode_ms"),
        "decode_with_thumbnail_ms_mean": mean("decode_with_thumbnail_ms"),
        "overhead_by_difference_ms_mean": round(
            mean("decode_with_thumbnail_ms") - mean("decode_ms"), 3
        ),
        "thumbnail_only_decode_ms_mean": mean("thumbnail_only_ms"),
        "images": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos-12mp", type=int, default=16, help="distinct 12 MP JPEGs")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="bench/measured/thumbnails-<time>.json")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import BACKBONES, PHONE_PHOTO, make_photos, save_result

    from embedlake.data.sample import build_sample_collection
    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.decode import THUMBNAIL_QUALITY, THUMBNAIL_SIZE, crop_plans

    plans = crop_plans({n: resolve_backbone(n).data_config() for n in BACKBONES})
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="thumbnail-cost-") as work:
        sample = build_sample_collection(Path(work) / "sample") / "images"
        sample_paths = sorted(p for p in sample.rglob("*") if p.is_file())
        photos = make_photos(Path(work) / "p12mp", args.photos_12mp, PHONE_PHOTO)
        result = {
            "bench": "thumbnail_cost",
            "measured_at": started.isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "pillow": Image.__version__,
            },
            "thumbnail": {"long_side": THUMBNAIL_SIZE, "jpeg_quality": THUMBNAIL_QUALITY},
            "backbones": list(BACKBONES),
            "repeats": args.repeats,
            "sample_collection": measure(sample_paths, plans, args.repeats),
            "phone_12mp": measure(photos, plans, args.repeats),
        }
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or Path(__file__).parent / "measured" / f"thumbnails-{stamp}.json"
    save_result(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
