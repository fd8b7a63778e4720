"""JPEG decoding on the device (nvJPEG through `torchvision.io.decode_jpeg`), for `--decode device`.

On a GPU, CPU decoding caps throughput long before the forward passes do. Here JPEG bytes are
read by threads, decoded in batches on the device (EXIF orientation applied, CMYK and grey
converted to RGB), resized with antialiased bicubic interpolation and centre-cropped on the device
with the geometry of timm's eval transform. The pixels are close to, not bit-identical with,
Pillow's (tests bound the difference). A file nvJPEG refuses goes back to the Pillow workers,
which decode it or give it its proper error code.

Thumbnails are made here too (`thumbnails_on_device`): each decoded image (oriented, before the
central window, as the Pillow path) is resized on the device to the thumbnail's size (bicubic,
antialiased, as the crops are), and only those few pixels (128x96x3 for a 4:3 photo) travel to
the host, behind the batch's forward passes; the JPEG encoding is the CPU's (Pillow, the same
quality as the Pillow path's), on the reading threads, a batch later (tasks.embed).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .decode import THUMBNAIL_SIZE, CropPlan, central_window, resized_size, thumbnail_size

if TYPE_CHECKING:
    import torch

__all__ = [
    "crops_on_device",
    "decode_jpegs",
    "decode_jpegs_on_device",
    "read_into_buffer",
    "resized_size",
    "thumbnails_on_device",
]


def read_into_buffer(path: str | os.PathLike) -> bytearray:
    """A file's bytes in a writable buffer that torch can wrap without copying."""
    with open(path, "rb") as f:
        buffer = bytearray(os.fstat(f.fileno()).st_size)
        view = memoryview(buffer)
        filled = 0
        while filled < len(buffer):
            n = f.readinto(view[filled:])
            if not n:
                raise OSError(f"{path}: file shrank while being read")
            filled += n
    return buffer


def crops_on_device(images: list[torch.Tensor], plans: list[CropPlan]) -> dict[str, torch.Tensor]:
    """CHW uint8 images -> NHWC uint8 crops per plan: resize short side (bicubic, antialias),
    centre crop.

    Images of the same size are stacked and converted to float once, then resized for every
    plan in one batched call each (a collection is mostly one size).
    """
    import torch
    import torch.nn.functional as F

    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape[-2:]), []).append(index)
    out: dict[str, torch.Tensor] = {}
    for (h, w), indexes in by_shape.items():
        pixels = torch.stack([images[i] for i in indexes]).float()
        if box := central_window(w, h):  # a strip: only its centre reaches the crops
            pixels = pixels[..., box[1] : box[3], box[0] : box[2]]
            h, w = pixels.shape[-2:]
        for plan in plans:
            size = plan.crop_size
            new_h, new_w = resized_size(h, w, plan.resize_short_side)
            x = pixels
            if (new_h, new_w) != (h, w):
                x = F.interpolate(
                    x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
                )
            top = int(round((new_h - size) / 2.0))
            left = int(round((new_w - size) / 2.0))
            # out of place: without a resize, x is `pixels`, which the next plan reads too
            x = x[..., top : top + size, left : left + size].round().clamp(0, 255)
            x = x.to(torch.uint8)
            if len(by_shape) == 1:  # no index_put: its index list would synchronise the stream
                out[plan.backbone] = x
                continue
            if plan.backbone not in out:
                out[plan.backbone] = torch.empty(
                    (len(images), 3, size, size), dtype=torch.uint8, device=x.device
                )
            out[plan.backbone][indexes] = x
    return {name: x.permute(0, 2, 3, 1).contiguous() for name, x in out.items()}


def thumbnails_on_device(
    images: list[torch.Tensor], size: int = THUMBNAIL_SIZE, chunk: int = 8
) -> list[torch.Tensor]:
    """CHW uint8 images -> HWC uint8 thumbnails (long side `size`, never enlarged), on the
    images' device; bicubic with antialias. Images of one size are resized `chunk` at a time (a
    12 MP image is 145 MB as float)."""
    import torch
    import torch.nn.functional as F

    out: list[torch.Tensor | None] = [None] * len(images)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape[-2:]), []).append(index)
    for (h, w), indexes in by_shape.items():
        new_w, new_h = thumbnail_size(w, h, size)
        for start in range(0, len(indexes), chunk):
            part = indexes[start : start + chunk]
            x = torch.stack([images[i] for i in part])
            if (new_h, new_w) != (h, w):
                x = F.interpolate(
                    x.float(),
                    size=(new_h, new_w),
                    mode="bicubic",
                    antialias=True,
                    align_corners=False,
                )
                x = x.round().clamp(0, 255).to(torch.uint8)
            for i, small in zip(part, x.permute(0, 2, 3, 1), strict=True):
                out[i] = small.contiguous()
    return out


def decode_jpegs_on_device(
    payloads: list[bytes | bytearray | None], device: str, plans: list[CropPlan]
) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """Crops per plan for JPEG bytes; returns (crops of the decoded, their indexes, refused).

    A bytearray payload is used in place (`read_into_buffer`); bytes are copied once. An empty
    payload, or None (a file that could not be read), is refused without trying it.
    """
    images, ok, refused = decode_jpegs(payloads, device)
    crops = crops_on_device(images, plans) if images else {}
    return crops, ok, refused


def decode_jpegs(
    payloads: list[bytes | bytearray | None], device: str
) -> tuple[list[torch.Tensor], list[int], list[int]]:
    """JPEG bytes -> (CHW uint8 RGB images on `device`, oriented; their indexes; refused)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tried = [i for i, b in enumerate(payloads) if b]
    data = [
        torch.frombuffer(b if isinstance(b, bytearray) else bytearray(b), dtype=torch.uint8)
        for b in (payloads[i] for i in tried)
    ]
    try:
        images = (
            decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
            if data
            else []
        )
        ok = list(tried)
    except RuntimeError:
        # one bad file fails the whole batch call: find it by decoding one at a time
        images, ok = [], []
        for i, tensor in zip(tried, data, strict=True):
            try:
                images.append(
                    decode_jpeg(
                        tensor, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
                    )
                )
                ok.append(i)
            except RuntimeError:
                continue
    refused = sorted(set(range(len(payloads))) - set(ok))
    return images, ok, refused
