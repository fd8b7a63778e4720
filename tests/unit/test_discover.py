"""Discover: every file becomes a row; header, EXIF and GPS values; skip rules."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from embedlake.tasks.discover import (
    discover_files,
    fs_path,
    iter_source_files,
    path_from_readable,
    probe_file,
    readable_path,
)
from embedlake.tasks.lake import FILES_SCHEMA, SCHEMA_PART, rows_to_table
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
    fs.pipe(f"/skip-test/photos/lake/runs/{SCHEMA_PART}", b"PAR1")
    fs.pipe("/skip-test/photos/lakeside.jpg", b"not a lake, not an image")
    source = open_source("memory://skip-test/photos")
    rows = discover_files(source, skip=["memory:///skip-test/photos/lake"])
    assert sorted(r["path"] for r in rows) == ["a.jpg", "lakeside.jpg"]


@pytest.mark.parametrize(
    "raw",
    [
        b"caf\xe9.jpg",  # Latin-1
        b"d\xe9j\xe0/vu\xff.png",
        b"caf\\xe9.jpg",  # a valid name that looks like an escape
        b"caf\\xE9.jpg",
        b"\\\xe9",
        b"\\x\xe9",
        b"x\\\\x41",
        b"\xed\xa0\x80.jpg",  # an encoded surrogate is not valid UTF-8
        "été/ü.jpg".encode(),
        b"a\"b'c\nd.jpg",
    ],
)
def test_readable_path_is_utf8_and_inverts_to_the_exact_name(raw):
    text = readable_path(raw)
    text.encode("utf-8")  # strict: no surrogates, so Parquet takes it
    assert path_from_readable(text) == raw


def test_readable_path_keeps_valid_names_and_never_collides():
    assert readable_path("été/a\"b'c\nd.jpg".encode()) == "été/a\"b'c\nd.jpg"
    assert readable_path(b"caf\xe9.jpg") == "caf\\xe9.jpg"
    assert readable_path(b"caf\\xe9.jpg") == "caf\\x5cxe9.jpg"
    names = [b"caf\xe9.jpg", b"caf\\xe9.jpg", b"caf\\x5cxe9.jpg", "caf\ufffd.jpg".encode()]
    assert len({readable_path(n) for n in names}) == len(names)


def test_a_name_that_is_not_utf8_is_stored_readably_and_reopened_exactly(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = jpeg_bytes(photo("coffee.png").resize((60, 40)))
    with open(os.fsencode(src) + b"/caf\xe9.jpg", "wb") as handle:
        handle.write(data)
    (src / "plain.jpg").write_bytes(data)
    rows = {r["path"]: r for r in discover_files(src)}
    odd = rows["caf\\xe9.jpg"]
    assert (odd["status"], odd["path_bytes"]) == ("ok", b"caf\xe9.jpg")
    assert rows["plain.jpg"]["path_bytes"] is None
    assert fs_path(src, odd).read_bytes() == data
    assert fs_path(src, {"path": odd["path"]}).read_bytes() == data  # from the text alone
    table = rows_to_table(list(rows.values()), FILES_SCHEMA)  # raised on surrogates before
    assert table.column("path_bytes").to_pylist() == [b"caf\xe9.jpg", None]


def test_special_files_are_skipped_without_hanging(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.jpg").write_bytes(b"x")
    os.mkfifo(src / "pipe.jpg")
    (src / "loop_a.jpg").symlink_to("loop_b.jpg")
    (src / "loop_b.jpg").symlink_to("loop_a.jpg")
    (src / "dangling.jpg").symlink_to("missing.jpg")
    (src / "sub" / "up").symlink_to("..")
    (src / "to_pipe.jpg").symlink_to("pipe.jpg")
    names = [p.relative_to(src).as_posix() for p in iter_source_files(src)]
    assert names == ["sub/a.jpg"]


def test_a_file_that_became_a_fifo_is_an_error_row_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    rows = []
    probing = threading.Thread(target=lambda: rows.append(probe_file(fifo, tmp_path)), daemon=True)
    probing.start()
    probing.join(timeout=60)
    if probing.is_alive():  # blocked opening the FIFO: a writer releases it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("probing a FIFO blocked")
    assert (rows[0]["status"], rows[0]["error_code"]) == ("error", "unreadable")


@pytest.mark.parametrize(
    "path", ["../outside.jpg", "a/../../outside.jpg", "/etc/passwd", "\\x2e\\x2e/outside.jpg", ""]
)
def test_fs_path_refuses_names_that_leave_source(tmp_path, path):
    from embedlake.tasks.discover import fs_path

    with pytest.raises(ValueError, match="does not name a file under SOURCE"):
        fs_path(tmp_path, {"path": path})


def test_the_walk_lists_what_os_walk_listed_in_its_order(tmp_path):
    from embedlake.tasks.discover import _is_regular_file

    src = tmp_path / "src"
    names = ["b.jpg", "a/z.jpg", "a/b/c.jpg", "a-b/x.jpg", "a/b-c.jpg", "A.jpg", "c/d/e/f.jpg"]
    names += ["é.jpg", "a/.hidden/x.jpg", ".h.jpg", "skip/me.jpg"]
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    (src / "link_dir").symlink_to(src / "a")  # a symlinked folder is not descended into
    (src / "a" / "link.jpg").symlink_to(src / "b.jpg")  # a link to a file inside: listed
    (src / "dangling.jpg").symlink_to(src / "nothing.jpg")

    def os_walk(source, skip):  # the definition the scandir walk replaced
        found = []
        for root, dirs, files in os.walk(source, followlinks=False):
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and (Path(root) / d).resolve() != skip
            )
            found += [
                Path(root) / n
                for n in sorted(files)
                if not n.startswith(".") and _is_regular_file(Path(root) / n, source)
            ]
        return found

    got = iter_source_files(src, skip=[src / "skip"])
    assert got == os_walk(src.resolve(), (src / "skip").resolve())
    assert "a/link.jpg" in {p.relative_to(src).as_posix() for p in got}
    assert len(got) == 9
