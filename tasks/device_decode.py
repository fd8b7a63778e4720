"""JPEG decoding on the device (nvJPEG through `torchvision.io.decode_jpeg`), for `--decode device`.

On a GPU, CPU decoding caps throughput long before the forward passes do. Here JPEG bytes are
read by threads, decoded in batches on the device (EXIF orientation applied, CMYK and grey
converted to RGB), resized with antialiased bicubic interpolation and centre-cropped on the device
with the geometry of timm's eval transform. The pixels are close to, not bit-identical with,
Pillow's (tests bound the difference). A file nvJPEG refuses goes back to the Pillow workers,
which decode it or give it its proper error code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .decode import CropPlan

if TYPE_CHECKING:
    import torch

__all__ = ["crop_on_device", "decode_jpegs_on_device", "resized_size"]


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """torchvision's Resize(int) geometry: the short side becomes `short_side`, long truncates."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def crop_on_device(images: list[torch.Tensor], plan: CropPlan) -> torch.Tensor:
    """CHW uint8 images -> NHWC uint8 crops: resize short side (bicubic, antialias), centre crop.

    Images of the same size are resized in one batched call (a collection is mostly one size).
    """
    import torch
    import torch.nn.functional as F

    size = plan.crop_size
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape[-2:]), []).append(index)
    out = None
    if len(by_shape) > 1:  # (one size: no index_put, whose index list would sync the stream)
        out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=images[0].device)
    for (h, w), indexes in by_shape.items():
        new_h, new_w = resized_size(h, w, plan.resize_short_side)
        x = torch.stack([images[i] for i in indexes]).float()
        if (new_h, new_w) != (h, w):
            x = F.interpolate(
                x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
            )
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        x = x[..., top : top + size, left : left + size]
        x = x.round_().clamp_(0, 255).to(torch.uint8)
        if out is None:
            out = x
        else:
            out[indexes] = x
    return out.permute(0, 2, 3, 1).contiguous()


def decode_jpegs_on_device(
    payloads: list[bytes], device: str, plans: list[CropPlan]
) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """Crops per plan for JPEG bytes; returns (crops of the decoded, their indexes, refused)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in payloads]
    try:
        images = decode_jpeg(
            data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
        )
        ok = list(range(len(data)))
    except RuntimeError:
        # one bad file fails the whole batch call: find it by decoding one at a time
        images, ok = [], []
        for i, tensor in enumerate(data):
            try:
                images.append(
                    decode_jpeg(
                        tensor, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
                    )
                )
                ok.append(i)
            except RuntimeError:
                continue
    refused = sorted(set(range(len(data))) - set(ok))
    crops = {plan.backbone: crop_on_device(images, plan) for plan in plans} if images else {}
    return crops, ok, refused
