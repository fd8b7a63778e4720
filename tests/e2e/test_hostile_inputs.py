"""A corpus of hostile inputs, built here: the run exits 0 and records every regular file once.

Odd names (not UTF-8, newlines, quotes), extreme aspect ratios, special files (a FIFO, symlink
loops, a dangling link), deep nesting, a 400-megapixel PNG that is small on disk, a 300-frame
GIF, a 60 kB junk EXIF field and a JPEG named `.png`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import jpeg_bytes, photo, run_cli

pytestmark = pytest.mark.e2e


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def huge_single_colour_png(side: int) -> bytes:
    """A 1-bit greyscale PNG of side x side pixels, compressed row by row (never in memory)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte 0, then all-black bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def build_hostile_corpus(root: Path) -> None:
    """Every hostile case under `root`; bytes paths where a name is not UTF-8."""
    root.mkdir(parents=True)
    cat = photo("chelsea.png").resize((96, 64))
    broot = os.fsencode(root)
    # names: Latin-1 bytes (a file and a folder), a newline, quotes, a literal backslash-x
    with open(broot + b"/caf\xe9.jpg", "wb") as handle:
        handle.write(jpeg_bytes(cat))
    os.mkdir(broot + b"/d\xe9j\xe0")
    with open(broot + b"/d\xe9j\xe0/vu\xff.png", "wb") as handle:
        handle.write(encoded(cat.rotate(90, expand=True), "PNG"))
    (root / "line\nbreak.jpg").write_bytes(jpeg_bytes(cat.transpose(Image.FLIP_LEFT_RIGHT)))
    (root / "a\"b'c.jpg").write_bytes(jpeg_bytes(cat.transpose(Image.FLIP_TOP_BOTTOM)))
    (root / "caf\\xe9.jpg").write_bytes(jpeg_bytes(cat, quality=60))  # the escape's look-alike
    # extreme aspect ratios
    for w, h in ((1, 20000), (20000, 1)):
        strip = Image.linear_gradient("L").resize((max(w, 2), max(h, 2))).crop((0, 0, w, h))
        (root / f"strip_{w}x{h}.jpg").write_bytes(jpeg_bytes(strip.convert("RGB")))
        (root / f"strip_{w}x{h}.png").write_bytes(encoded(strip, "PNG"))
    # special files: a FIFO, a symlink loop, a folder linking to its parent, a dangling link
    os.mkfifo(root / "pipe.jpg")
    (root / "loop_a.jpg").symlink_to("loop_b.jpg")
    (root / "loop_b.jpg").symlink_to("loop_a.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..")
    (root / "sub" / "inside.jpg").write_bytes(jpeg_bytes(cat.rotate(180)))
    (root / "dangling.jpg").symlink_to("no/such/file.jpg")
    # deep nesting
    deep = root.joinpath(*[f"d{i:02d}" for i in range(60)])
    deep.mkdir(parents=True)
    (deep / "bottom.jpg").write_bytes(jpeg_bytes(cat.resize((48, 32))))
    # 400 megapixels, a few hundred kB on disk
    (root / "bomb.png").write_bytes(huge_single_colour_png(20000))
    # 300 frames
    frames = [Image.new("RGB", (32, 32), (i % 256, 7 * i % 256, 255 - i % 256)) for i in range(300)]
    (root / "many_frames.gif").write_bytes(
        encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20)
    )
    # 60 kB of junk in EXIF: a UserComment and a MakerNote
    exif = Image.Exif()
    exif[0x010F] = "Junk Camera"
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + os.urandom(30_000)
    exif.get_ifd(0x8769)[0x927C] = os.urandom(30_000)
    (root / "junk_exif.jpg").write_bytes(encoded(cat.rotate(45), "JPEG", exif=exif))
    # a JPEG named .png
    (root / "really_a_jpeg.png").write_bytes(jpeg_bytes(cat.resize((80, 80))))


def regular_files(root: Path) -> set[bytes]:
    """Relative bytes paths of the regular files under `root`, by our own walk (no links)."""
    broot = os.fsencode(root)
    found = set()
    for folder, _dirs, files in os.walk(broot):
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full) and os.path.isfile(full):
                found.add(os.path.relpath(full, broot))
    return found


@pytest.mark.heavy  # a run in a subprocess, its decode workers on a 400-megapixel bomb and more
def test_hostile_corpus_runs_and_every_regular_file_is_recorded_once(tmp_path, cli_env):
    src, lake = tmp_path / "src", tmp_path / "lake"
    build_hostile_corpus(src)
    done = run_cli(
        "run",
        str(src),
        "--lake",
        str(lake),
        "--weights",
        "random",
        "--backbone",
        "mobilenet_v1_0.25_128",
        env=cli_env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    rows = pq.ParquetDataset(sorted(lake.glob("files/*.parquet"))).read().to_pylist()
    recorded = [r["path_bytes"] or r["path"].encode() for r in rows]
    assert len(recorded) == len(set(recorded)), "a file recorded twice"
    assert set(recorded) == regular_files(src)
    by_name = {r["path_bytes"] or r["path"].encode(): r for r in rows}
    # readable, and distinct from the real name that looks like its escape
    assert by_name[b"caf\xe9.jpg"]["path"] == "caf\\xe9.jpg"
    assert by_name[b"caf\\xe9.jpg"]["path"] == "caf\\x5cxe9.jpg"
    assert by_name[b"line\nbreak.jpg"]["path_bytes"] is None
    assert by_name[b"d\xe9j\xe0/vu\xff.png"]["status"] == "ok"
    assert by_name[b"bomb.png"]["error_code"] == "decompression_bomb"
    assert by_name[b"really_a_jpeg.png"]["format"] == "JPEG"
    assert by_name[b"many_frames.gif"]["n_frames"] == 300
    assert by_name[b"junk_exif.jpg"]["exif_make"] == "Junk Camera"
    # every 'ok' file was embedded (odd names reopened by their real bytes)
    ok = {r["image_id"] for r in rows if r["status"] == "ok"}
    embedded = pq.ParquetDataset(sorted(lake.glob("embeddings/*.parquet"))).read()
    assert set(embedded.column("image_id").to_pylist()) == ok
    assert b"strip_1x20000.jpg" in by_name and by_name[b"strip_1x20000.jpg"]["status"] == "ok"
    # the report reopens files by their real names: every thumbnail it shows is rendered
    pages = list(lake.glob("reports/*/index.html"))
    assert pages and not any("thumbnail unavailable" in p.read_text() for p in pages)
