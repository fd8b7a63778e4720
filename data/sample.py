"""The bundled sample collection: real photos that ship inside scikit-image, built on first use.

The builder writes a small labelled collection with the things a real one has: photos in several
formats, near-duplicates (resized and recompressed copies), an exact byte copy under another name,
and broken files (empty, truncated, not an image), plus `metadata.csv` keyed by relative path.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from importlib import resources
from pathlib import Path

from PIL import Image

__all__ = ["SAMPLE_IMAGES", "build_sample_collection", "default_sample_dir"]

# scikit-image file -> (label, name in the collection)
SAMPLE_IMAGES = {
    "astronaut.png": ("person", "astronaut"),
    "camera.png": ("person", "cameraman"),
    "chelsea.png": ("cat", "chelsea"),
    "coffee.png": ("food", "coffee"),
    "rocket.jpg": ("vehicle", "rocket"),
    "motorcycle_left.png": ("vehicle", "motorcycle"),
    "horse.png": ("animal", "horse"),
    "coins.png": ("object", "coins"),
    "hubble_deep_field.jpg": ("space", "hubble"),
    "moon.png": ("space", "moon"),
    "brick.png": ("texture", "brick"),
    "grass.png": ("texture", "grass"),
    "gravel.png": ("texture", "gravel"),
    "retina.jpg": ("microscopy", "retina"),
    "ihc.png": ("microscopy", "ihc"),
    "cell.png": ("microscopy", "cell"),
    "page.png": ("document", "page"),
    "text.png": ("document", "text"),
}
_NEAR_DUPLICATES = ("astronaut", "chelsea", "coffee", "rocket")
_VERSION = "1"  # bump when the builder changes, so an old cache is rebuilt


def default_sample_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "embedlake" / f"sample-v{_VERSION}"


def _skimage_bytes(name: str) -> bytes:
    return resources.files("skimage.data").joinpath(name).read_bytes()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def build_sample_collection(target: Path | None = None) -> Path:
    """Build TARGET/images/ and TARGET/metadata.csv (default: the user cache), once.

    The sidecar lives beside the images, not among them, so it is not inventoried as a file.
    """
    target = target or default_sample_dir()
    if (target / "metadata.csv").is_file():
        return target
    staging = target.with_name(target.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows: list[dict[str, str]] = []

    def put(rel: str, data: bytes, label: str, variant: str, original: str) -> None:
        path = staging / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append({"path": rel, "label": label, "variant": variant, "original": original})

    for source_name, (label, name) in SAMPLE_IMAGES.items():
        img = Image.open(io.BytesIO(_skimage_bytes(source_name)))
        img.load()
        if source_name.endswith(".png") and label in ("texture", "document"):
            put(f"{label}/{name}.png", _skimage_bytes(source_name), label, "original", name)
        else:
            put(f"{label}/{name}.jpg", _jpeg(img, 92), label, "original", name)
        if name in _NEAR_DUPLICATES:
            small = img.convert("RGB").resize((img.width // 2, img.height // 2), Image.LANCZOS)
            put(f"variants/{name}_half_q70.jpg", _jpeg(small, 70), label, "resized", name)

    first = staging / "images" / rows[0]["path"]
    put("copies/astronaut_copy.jpg", first.read_bytes(), "person", "exact_copy", "astronaut")
    put("broken/empty.jpg", b"", "", "broken", "")
    put("broken/truncated.jpg", first.read_bytes()[:4000], "", "broken", "")
    put("broken/notes.txt", b"not an image\n", "", "broken", "")

    with (staging / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "variant", "original"])
        writer.writeheader()
        writer.writerows(rows)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
