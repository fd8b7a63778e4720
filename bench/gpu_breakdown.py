"""Where the time of a device-decoded batch goes, and whether torch.compile pays (CUDA only).

Not a test; not run in CI. With the GPU otherwise idle, per batch of 640x480 JPEGs: nvJPEG
decoding alone, the resize-and-crop for both backbones alone, and the forward passes alone;
then the forward-only rate of both backbones compiled with torch.compile (compile time
reported on its own, since a run pays it once per process and batch shape).

    python bench/gpu_breakdown.py --images 2048 --batch 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import make_photos, save_result  # noqa: E402

BACKBONES = ("mobilenet_v1", "xception")


def _timed(fn, repeat: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeat


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default="bench/results/gpu-breakdown.json")
    args = parser.parse_args()

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.decode import crop_plans
    from embedlake.tasks.device_decode import crops_on_device, read_into_buffer
    from embedlake.tasks.embed import Embedder
    from embedlake.tasks.weights import load_backbone, parse_weights_spec

    sources = parse_weights_spec("random", list(BACKBONES))
    loaded = [load_backbone(resolve_backbone(n), sources[n]) for n in BACKBONES]
    plans = crop_plans({b.spec.name: b.spec.data_config() for b in loaded})
    embedder = Embedder(loaded, "cuda", "fp16")
    result: dict = {"device": torch.cuda.get_device_name(0), "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.batch, (640, 480))
        buffers = [read_into_buffer(p) for p in paths]
    data = [torch.frombuffer(b, dtype=torch.uint8) for b in buffers]

    def decode():
        return decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda", apply_exif_orientation=True)

    images = decode()
    crops = crops_on_device(images, plans)
    per_image = 1e3 / args.batch
    result["ms_per_image"] = {
        "nvjpeg_decode": _timed(decode, 5) * per_image,
        "resize_and_crop_both": _timed(lambda: crops_on_device(images, plans), 5) * per_image,
        "forward_both": _timed(lambda: embedder.embed(crops), 5) * per_image,
    }
    print(json.dumps(result, indent=1), flush=True)
    if args.compile:
        for name in list(embedder.models):
            embedder.models[name] = torch.compile(embedder.models[name])
        started = time.perf_counter()
        embedder.embed(crops)
        torch.cuda.synchronize()
        result["compile_seconds"] = time.perf_counter() - started
        result["ms_per_image"]["forward_both_compiled"] = (
            _timed(lambda: embedder.embed(crops), 5) * per_image
        )
    save_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
