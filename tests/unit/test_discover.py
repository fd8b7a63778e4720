"""Discover: every file becomes a row; header, EXIF and GPS values; skip rules."""

from __future__ import annotations

from datetime import datetime

import pytest
from PIL import Image

from embedlake.tasks.discover import discover_files, iter_source_files
from tests.conftest import jpeg_bytes, make_collection, photo

pytestmark = pytest.mark.unit


def test_every_file_is_a_row_with_status_and_code(tmp_path):
    make_collection(tmp_path / "src", n_photos=2)
    rows = {r["path"]: r for r in discover_files(tmp_path / "src")}
    assert rows["broken/empty.jpg"]["error_code"] == "empty_file"
    assert rows["broken/readme.txt"]["error_code"] == "not_an_image"
    good = rows["good/astronaut.jpg"]
    assert (good["status"], good["format"], good["width"], good["height"], good["mode"]) == (
        "ok",
        "JPEG",
        512,
        512,
        "RGB",
    )
    assert good["image_id"] == rows["copies/same_bytes.jpg"]["image_id"]
    assert len(good["image_id"]) == 64
    assert len(rows) == 7


def test_hidden_files_lake_and_escaping_symlinks_are_skipped(tmp_path):
    src = tmp_path / "src"
    make_collection(src, n_photos=1)
    (src / ".hidden.jpg").write_bytes(b"x")
    (src / ".cache").mkdir()
    (src / ".cache" / "a.jpg").write_bytes(b"x")
    (src / "lake").mkdir()
    (src / "lake" / "part.parquet").write_bytes(b"x")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    (src / "link_out.jpg").symlink_to(outside)
    (src / "link_in.jpg").symlink_to(src / "good" / "astronaut.jpg")
    names = {p.relative_to(src).as_posix() for p in iter_source_files(src, skip=[src / "lake"])}
    assert "link_in.jpg" in names
    assert not {
        n for n in names if n.startswith((".", "lake/")) or "/." in n or n == "link_out.jpg"
    }


def test_exif_and_gps_values(tmp_path):
    img = photo("chelsea.png")
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS 5D"  # Model
    exif[0x0112] = 6  # Orientation: rotate 90
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 12:30:45"  # DateTimeOriginal
    exif.get_ifd(0x8769)[0x829A] = 0.004  # ExposureTime
    exif.get_ifd(0x8769)[0x8827] = 200  # ISO
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.6)
    gps[3], gps[4] = "W", (2.0, 17.0, 40.2)
    path = tmp_path / "cat.jpg"
    img.save(path, "JPEG", exif=exif)
    (row,) = discover_files(tmp_path)
    assert (row["exif_make"], row["exif_model"], row["exif_orientation"]) == ("Canon", "EOS 5D", 6)
    assert row["exif_datetime"] == datetime(2021, 7, 4, 12, 30, 45)
    assert row["gps_lat"] == pytest.approx(48 + 51 / 60 + 29.6 / 3600, abs=1e-6)
    assert row["gps_lon"] == pytest.approx(-(2 + 17 / 60 + 40.2 / 3600), abs=1e-6)
    assert row["exif_exposure_time"] == pytest.approx(0.004)
    assert row["exif_iso"] == 200


def test_malformed_exif_never_fails_the_image(tmp_path):
    path = tmp_path / "odd.jpg"
    data = jpeg_bytes(photo("coffee.png"))
    # an APP1 segment that claims to be EXIF but holds garbage
    app1 = b"Exif\x00\x00" + b"\xff" * 40
    data = data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:]
    path.write_bytes(data)
    (row,) = discover_files(tmp_path)
    assert row["status"] == "ok" and row["width"] == 600


def test_a_url_lake_under_a_url_source_is_not_inventoried():
    import fsspec

    from embedlake.tasks.sources import open_source

    fs = fsspec.filesystem("memory")
    fs.pipe("/skip-test/photos/a.jpg", jpeg_bytes(photo("chelsea.png")))
    fs.pipe("/skip-test/photos/lake/runs/_schema.parquet", b"PAR1")
    fs.pipe("/skip-test/photos/lakeside.jpg", b"not a lake, not an image")
    source = open_source("memory://skip-test/photos")
    rows = discover_files(source, skip=["memory:///skip-test/photos/lake"])
    assert sorted(r["path"] for r in rows) == ["a.jpg", "lakeside.jpg"]
