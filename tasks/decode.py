"""Decode each image once and cut the crop every requested backbone needs.

The crops are exactly timm's eval pipeline for each pretrained config: the PIL stages of
`create_transform(**resolve_data_config(...))` (bicubic resize of the short side, centre crop)
are taken from timm itself and applied here; the float stages (ToTensor, Normalize) run on the
device, on uint8 batches, in `tasks.embed` with the same arithmetic.

Before cropping, an image is brought to 8-bit RGB the way a user expects: EXIF orientation
applied, first frame of an animation or multi-page file, alpha composited on white, 16-bit and
float modes scaled (not clipped) to 8 bits. An image more than `MAX_ASPECT` times longer than wide
is cut to its central window first (`central_window`): the crops only see its centre, and resizing
a whole 1x20000 strip would take gigabytes.

Large JPEGs decode at the smallest DCT scale (1/2, 1/4 or 1/8, libjpeg's) whose short side still
covers every crop's resize target, and each crop is then resampled straight from the reduced image
(`resize_centre_crop`: the centre crop's pixels only, not the whole resized image). A 4032x3024
photo decodes at 504x378 for Xception's 333-pixel short side. The crops are then close to timm's
(embeddings within cosine 0.999), not equal: libjpeg's scaled IDCT stands in for the first part of
the bicubic downscale. Every other image (not a JPEG, or too small to reduce) goes through timm's
own stages and is bit-identical to its eval transform.

The same decode can also give the image's thumbnail (`decode_image(..., thumbnail=True)`): the
oriented RGB image (before the central window, so a strip's thumbnail is the whole strip) scaled
to `THUMBNAIL_SIZE` pixels on its long side (never enlarged), a whole-factor box reduction then
bicubic (Pillow's reducing_gap=1.0), JPEG at quality `THUMBNAIL_QUALITY`. It is an extra
output: the crops are computed exactly as without it. From a drafted 12 MP JPEG (504x378) it
costs a fraction of a millisecond (bench/thumbnail_cost.py).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "MAX_ASPECT",
    "THUMBNAIL_QUALITY",
    "THUMBNAIL_SIZE",
    "CropPlan",
    "DecodeError",
    "Thumbnail",
    "central_window",
    "crop_plans",
    "decode_for_backbones",
    "decode_image",
    "encode_thumbnail",
    "make_thumbnail",
    "thumbnail_size",
    "resize_centre_crop",
    "resized_size",
    "to_rgb",
]

_BACKGROUND = (255, 255, 255)
MAX_ASPECT = 16
THUMBNAIL_SIZE = 128  # pixels on the thumbnail's long side
THUMBNAIL_QUALITY = 80  # Pillow's JPEG quality: ~3-4 KB at 128x96 for a photo


class DecodeError(Exception):
    """A file that cannot become pixels; `code` is one of discover.ERROR_CODES."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CropPlan:
    """The PIL stages of one backbone's timm eval transform."""

    backbone: str
    resize_short_side: int
    crop_size: int
    stages: Any  # torchvision Compose of timm's Resize + CenterCrop


def crop_plans(data_configs: dict[str, dict[str, Any]]) -> list[CropPlan]:
    """One plan per backbone, from timm's own eval transform for its data config."""
    from timm.data import create_transform
    from torchvision import transforms

    plans = []
    for name, cfg in data_configs.items():
        full = create_transform(**cfg, is_training=False)
        pil_stages = [
            t for t in full.transforms if isinstance(t, (transforms.Resize, transforms.CenterCrop))
        ]
        if len(pil_stages) != 2 or len(full.transforms) != 4:
            raise RuntimeError(f"unexpected timm eval transform for {name}: {full}")
        resize, crop = pil_stages
        if (
            cfg["interpolation"] != "bicubic"
            or not isinstance(resize.size, int)
            or crop.size[0] > resize.size  # a crop wider than the resized image would be padded
        ):
            raise RuntimeError(f"unexpected timm eval transform for {name}: {full}")
        plans.append(CropPlan(name, resize.size, crop.size[0], transforms.Compose(pil_stages)))
    return plans


def central_window(width: int, height: int) -> tuple[int, int, int, int] | None:
    """The (left, top, right, bottom) box to crop from before resizing, or None to keep it all.

    Only an image whose long side exceeds `MAX_ASPECT` times its short side is cut, to a centred
    window `MAX_ASPECT` short sides long. A centre crop after the short-side resize spans at most
    one short side of the original, so the window holds it with a wide margin for the bicubic
    kernel; the crops match the uncut image's up to the rounding of the centre.
    """
    short, long = min(width, height), max(width, height)
    if long <= MAX_ASPECT * short:
        return None
    keep = MAX_ASPECT * short
    start = (long - keep) // 2
    if width > height:
        return start, 0, start + keep, height
    return 0, start, width, start + keep


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: alpha over white, wide modes rescaled to their own range, palettes expanded."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 65535.0 * 255.0
        else:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


@dataclass(frozen=True)
class Thumbnail:
    """An image's thumbnail: JPEG bytes and their pixel size."""

    data: bytes
    width: int
    height: int


def thumbnail_size(width: int, height: int, size: int = THUMBNAIL_SIZE) -> tuple[int, int]:
    """The long side becomes `size` (an image already that small keeps its size), aspect kept,
    no side below 1 pixel."""
    long = max(width, height)
    if long <= size:
        return width, height
    return max(1, round(width * size / long)), max(1, round(height * size / long))


def make_thumbnail(rgb: Image.Image, size: int = THUMBNAIL_SIZE) -> Thumbnail:
    """A thumbnail of an 8-bit RGB image (already oriented): JPEG of a bicubic resize.

    reducing_gap=1.0: Pillow first box-reduces by the largest whole factor that keeps the image
    at least the target's size, then resamples bicubic. 3-9x cheaper than a plain bicubic
    (0.24 vs 2.2 ms from 640x480, 0.53 vs 1.56 ms from 504x378, one loaded core here) and within
    1.1-1.6 levels of a Lanczos resize on average, below what JPEG at quality 80 changes."""
    target = thumbnail_size(rgb.width, rgb.height, size)
    small = (
        rgb
        if target == rgb.size
        else rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=1.0)
    )
    return encode_thumbnail(small)


def encode_thumbnail(small: Image.Image | np.ndarray) -> Thumbnail:
    """JPEG bytes of an already small RGB image (a PIL image, or HWC uint8 pixels)."""
    if isinstance(small, np.ndarray):
        small = Image.fromarray(small, "RGB")
    out = io.BytesIO()
    small.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return Thumbnail(out.getvalue(), *small.size)


def decode_for_backbones(
    file: Path | bytes, plans: list[CropPlan], max_pixels: int, reduce_jpeg: bool = True
) -> dict[str, np.ndarray]:
    """uint8 HWC crops, one per plan, from a single decode of `file` (a path or its bytes).

    Raises DecodeError.
    """
    return decode_image(file, plans, max_pixels, reduce_jpeg)[0]


def decode_image(
    file: Path | bytes,
    plans: list[CropPlan],
    max_pixels: int,
    reduce_jpeg: bool = True,
    thumbnail: bool = False,
) -> tuple[dict[str, np.ndarray], Thumbnail | None]:
    """The crops (as `decode_for_backbones`) and, with `thumbnail`, the image's thumbnail, from
    one decode. With no plans, only the thumbnail is made (a JPEG then drafts for its size).

    Raises DecodeError.
    """
    thumb = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(file) if isinstance(file, bytes) else file) as img:
                if img.width * img.height > max_pixels:
                    raise DecodeError(
                        "decompression_bomb",
                        f"{img.width}x{img.height} pixels exceeds the limit of {max_pixels}",
                    )
                short_side = (
                    max(p.resize_short_side for p in plans)
                    if plans
                    else THUMBNAIL_SIZE * min(img.size) // max(1, max(img.size)) + 1
                )
                reduced = reduce_jpeg and img.format == "JPEG" and draft_jpeg(img, short_side)
                img.seek(0)
                img.load()
                rgb = to_rgb(ImageOps.exif_transpose(img))
                if thumbnail:
                    thumb = make_thumbnail(rgb)
                if box := central_window(*rgb.size):
                    rgb = rgb.crop(box)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError("decompression_bomb", str(exc)) from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise DecodeError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    except UnidentifiedImageError as exc:  # discover's code for the same bytes
        raise DecodeError("not_an_image", "no image format recognises the bytes") from exc
    except OSError as exc:
        text = str(exc)
        code = "truncated" if "truncated" in text or "premature end" in text.lower() else "corrupt"
        if "decoder" in text and "not available" in text:
            code = "unsupported_format"
        raise DecodeError(code, f"{type(exc).__name__}: {text}") from exc
    except Exception as exc:  # Pillow plugins raise ValueError, SyntaxError, struct.error...
        raise DecodeError("corrupt", f"{type(exc).__name__}: {exc}") from exc
    if reduced:
        crops = {
            plan.backbone: np.asarray(
                resize_centre_crop(rgb, plan.resize_short_side, plan.crop_size), dtype=np.uint8
            )
            for plan in plans
        }
    else:
        crops = {plan.backbone: np.asarray(plan.stages(rgb), dtype=np.uint8) for plan in plans}
    return crops, thumb


def draft_jpeg(img: Image.Image, short_side: int) -> bool:
    """Have libjpeg decode `img` at the smallest of 1/2, 1/4, 1/8 whose short side stays at least
    `short_side` (the largest resize target of the crops); True when it will decode reduced.

    Call before loading. `img.size` becomes the reduced size: the file's own size is discover's
    (metadata), read from the header without drafting.
    """
    short = min(img.size)
    scale = 1
    while scale < 8 and short // (scale * 2) >= short_side:
        scale *= 2
    if scale == 1:
        return False
    # Pillow picks the largest scale with size // requested >= scale: this one
    img.draft("RGB", (img.width // scale, img.height // scale))
    return min(img.size) < short


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """torchvision's Resize(int) geometry: the short side becomes `short_side`, long truncates."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def resize_centre_crop(img: Image.Image, short_side: int, crop_size: int) -> Image.Image:
    """timm's Resize(short_side, bicubic) then CenterCrop(crop_size), computing only the crop.

    Pillow resamples the box of `img` that the crop covers at the full resize's scale: the same
    kernel centres and support as the full resize, for a fraction of the pixels (299x299 instead
    of 444x333 from a 504x378 image, and only the rows the crop needs). Not bit-identical to it:
    Pillow may run its two 8-bit passes in the other order for the box, which moves a pixel by a
    few levels at most.
    """
    new_h, new_w = resized_size(img.height, img.width, short_side)
    top = int(round((new_h - crop_size) / 2.0))
    left = int(round((new_w - crop_size) / 2.0))
    scale_x, scale_y = img.width / new_w, img.height / new_h
    box = (
        left * scale_x,
        top * scale_y,
        (left + crop_size) * scale_x,
        (top + crop_size) * scale_y,
    )
    return img.resize((crop_size, crop_size), Image.Resampling.BICUBIC, box=box)
