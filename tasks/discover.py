"""Discover: walk SOURCE and inventory every regular file as one row of `files`.

Each row carries the relative path, size, mtime, the SHA-256 of the bytes (= `image_id`), and
what the image header says (format, width, height, mode, EXIF) without decoding pixels. A file
that is not an image, is empty, unreadable or over the pixel limit becomes a row with
`status = 'error'` and an `error_code`; it never stops the walk.

Skipped, by rule: hidden files and folders (a name starting with '.'), the lake itself when it
lies inside SOURCE, symlinks whose target lies outside SOURCE, and what is not a regular file:
FIFOs, sockets and devices (never opened, so a FIFO cannot hang the walk), dangling symlinks and
symlink loops. A symlink to a regular file inside SOURCE is recorded under its own name; a
symlinked folder is not descended into (its files are recorded where they really are).

Names that are not valid UTF-8 (Parquet strings must be) are stored twice: `path` holds a
readable text, `path_bytes` the exact bytes (`readable_path`, `fs_path`).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from PIL import ExifTags, Image, UnidentifiedImageError

from .schemas import FILES_SCHEMA
from .sources import RemoteFile, RemoteSource, path_from_readable, readable_path

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ERROR_CODES",
    "STABLE_ERRORS",
    "discover_files",
    "iter_discovered",
    "fs_path",
    "is_unchanged",
    "iter_source_files",
    "NotARegularFile",
    "open_regular_file",
    "path_from_readable",
    "probe_file",
    "readable_path",
]

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default decompression-bomb threshold

# The stable vocabulary of `files.error_code` (README documents each).
ERROR_CODES = {
    "empty_file": "the file has zero bytes",
    "not_an_image": "no image format recognises the bytes",
    "unsupported_format": "recognised, but Pillow cannot decode this variant",
    "truncated": "the image data ends early",
    "corrupt": "the image data is malformed",
    "decompression_bomb": "more pixels than the configured limit",
    "timeout": "decoding took longer than the per-file limit",
    "unreadable": "the file could not be read (permissions, I/O error)",
}

# FILES_SCHEMA's fields that discovery fills; the caller stamps run_id, the writer recorded_at
_DISCOVERED_COLUMNS = [name for name in FILES_SCHEMA.names if name not in ("run_id", "recorded_at")]

_HASH_CHUNK = 1 << 20


def iter_source_files(source: Path, skip: list[Path] | None = None) -> list[Path]:
    """Every regular file under `source` by the skip rules above, in a stable (sorted) order."""
    source = source.resolve()
    skip_resolved = [p.resolve() for p in (skip or [])]
    found: list[Path] = []
    for root, dirs, files in os.walk(source, followlinks=False):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (root_path / d).resolve() not in skip_resolved
        )
        found.extend(
            root_path / name
            for name in sorted(files)
            if not name.startswith(".") and _is_regular_file(root_path / name, source)
        )
    return found


def _is_regular_file(path: Path, source: Path) -> bool:
    """A regular file, or a symlink to one inside `source`; a loop or dangling link is not."""
    try:
        if path.is_symlink():
            target = path.resolve(strict=True)
            return target.is_relative_to(source) and stat.S_ISREG(target.stat().st_mode)
        return stat.S_ISREG(path.lstat().st_mode)
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13's symlink loop
        return False


def fs_path(source: Path | RemoteSource, row: Mapping[str, Any]) -> Path | str:
    """The file behind a `files` row, to reopen it: a local path, or a remote source's name.

    Uses `path_bytes` when the row has it, else inverts `path` (query results carry only that).
    A name that would leave SOURCE (absolute, or with a '..' part, escaped or not) is refused:
    rows read back from a shared lake may have been crafted.
    """
    raw = row.get("path_bytes") or path_from_readable(row["path"])
    name = os.fsdecode(raw)
    if name.startswith("/") or ".." in name.split("/") or not name.strip("/"):
        raise ValueError(f"path {row['path']!r} does not name a file under SOURCE")
    return name if isinstance(source, RemoteSource) else source / name


class NotARegularFile(OSError):
    """A FIFO, socket or device where a file was expected."""


def open_regular_file(path: Path | str) -> BinaryIO:
    """`path` opened for reading, if it is a regular file; raises OSError (NotARegularFile).

    The open does not block: a FIFO (or a file swapped for one since the walk) must not hang it.
    """
    handle = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")  # noqa: SIM115
    try:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise NotARegularFile("not a regular file")
    except BaseException:
        handle.close()
        raise
    return handle


def probe_file(path: Path, source: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """The `files` row for one local file: stat, SHA-256, header and EXIF. Never raises."""
    row = _new_row(os.fsencode(path.relative_to(source).as_posix()))
    try:
        handle = open_regular_file(path)
    except NotARegularFile as exc:
        return _error(row, "unreadable", str(exc))
    except OSError as exc:
        return _error(row, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")
    with handle:
        try:
            info = os.fstat(handle.fileno())
            row["size_bytes"] = info.st_size
            row["mtime"] = datetime.fromtimestamp(info.st_mtime, tz=UTC)
            row["mtime_ns"] = info.st_mtime_ns
            row["image_id"] = _sha256(handle)
            handle.seek(0)
        except OSError as exc:
            return _error(row, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")
        return _probe_image(row, handle, max_pixels)


def probe_remote_file(
    source: RemoteSource, entry: RemoteFile, max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict[str, Any]:
    """The `files` row for one file behind fsspec, read once into memory. Never raises."""
    row = _new_row(entry.rel.encode("utf-8", "surrogateescape"))
    row["size_bytes"], row["mtime"] = entry.size, entry.mtime
    row["mtime_ns"] = _remote_mtime_ns(entry)
    try:
        data = source.read(entry.rel)
    except Exception as exc:  # fsspec backends raise their own error types for I/O failures
        return _error(row, "unreadable", f"{type(exc).__name__}: {exc}")
    row["size_bytes"] = len(data)
    row["image_id"] = hashlib.sha256(data).hexdigest()
    return _probe_image(row, io.BytesIO(data), max_pixels)


def _new_row(rel: bytes) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_DISCOVERED_COLUMNS)
    row["path"], row["status"] = readable_path(rel), "ok"
    if row["path"].encode("utf-8") != rel:
        row["path_bytes"] = rel  # the exact name, where `path` is not it
    return row


def _probe_image(row: dict[str, Any], file: Path | BinaryIO, max_pixels: int) -> dict[str, Any]:
    """Header fields and EXIF into `row`, or the error that stops it."""
    if row["size_bytes"] == 0:
        return _error(row, "empty_file", "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                row["format"] = img.format
                row["width"], row["height"] = img.size
                row["mode"] = img.mode
                row["n_frames"] = getattr(img, "n_frames", 1)
                if img.width * img.height > max_pixels:
                    return _error(
                        row,
                        "decompression_bomb",
                        f"{img.width}x{img.height} = {img.width * img.height} pixels exceeds "
                        f"the limit of {max_pixels}",
                    )
                row.update(read_exif(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _error(row, "decompression_bomb", str(exc))
    except UnidentifiedImageError:
        return _error(row, "not_an_image", "no image format recognises the bytes")
    except Exception as exc:  # a broken header can raise anything from inside a Pillow plugin
        return _error(row, "corrupt", f"{type(exc).__name__}: {exc}")
    return row


def discover_files(
    source: Path | RemoteSource,
    skip: list[Path | str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[dict[str, Any]]:
    """Every file's row under `source` in one list (see `iter_discovered`)."""
    return [row for chunk in iter_discovered(source, skip, max_pixels) for row, _ in chunk]


# errors the bytes alone decide: an unchanged file keeps them; any other error is probed again
STABLE_ERRORS = frozenset(
    {"empty_file", "not_an_image", "unsupported_format", "truncated", "corrupt"}
)


def iter_discovered(
    source: Path | RemoteSource,
    skip: list[Path | str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    chunk_rows: int = 4096,
    known: Mapping[str, dict[str, Any]] | None = None,
) -> Iterator[list[tuple[dict[str, Any], bool]]]:
    """Inventory every file under `source`, yielding (row, reused) pairs in chunks of at most
    `chunk_rows` (in the listing's order), so a caller can write each chunk before the next is
    read. Threads: hashing is I/O bound and releases the GIL.

    `known`: the source's rows from its previous run, by `path`. A file whose size and mtime (ns)
    match its known row, and whose row is 'ok' or has an error its bytes decide, is not opened:
    its known row is reused (`reused` True). As with rsync's quick check, a file rewritten with
    the same size and mtime goes unnoticed; `--rehash` (no `known`) reads everything.
    `skip`: folders (local paths) or URLs whose contents are not inventoried (the lake)."""
    workers = min(8, (os.cpu_count() or 1) * 2)
    known = known or {}
    if isinstance(source, RemoteSource):
        entries: list[Any] = source.list_files([s for s in skip or [] if isinstance(s, str)])

        def identity(entry: Any) -> tuple[str, int, int | None]:
            rel = readable_path(entry.rel.encode("utf-8", "surrogateescape"))
            return rel, entry.size, _remote_mtime_ns(entry)

        def probe(entry: Any) -> dict[str, Any]:
            return probe_remote_file(source, entry, max_pixels)
    else:
        source = source.resolve()
        entries = iter_source_files(source, [s for s in skip or [] if isinstance(s, Path)])

        def identity(entry: Any) -> tuple[str, int, int | None]:
            info = entry.stat()
            rel = readable_path(os.fsencode(entry.relative_to(source).as_posix()))
            return rel, info.st_size, info.st_mtime_ns

        def probe(entry: Any) -> dict[str, Any]:
            return probe_file(entry, source, max_pixels)

    def inventory(entry: Any) -> tuple[dict[str, Any], bool]:
        if known:
            try:
                rel, size, mtime_ns = identity(entry)
            except OSError:
                rel, size, mtime_ns = "", -1, None  # gone or unreadable: the probe says which
            old = known.get(rel)
            if old is not None and mtime_ns is not None and is_unchanged(old, size, mtime_ns):
                return dict(old), True
        return probe(entry), False

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(entries), chunk_rows):
            yield list(pool.map(inventory, entries[start : start + chunk_rows]))


def is_unchanged(old: Mapping[str, Any], size: int, mtime_ns: int) -> bool:
    """Whether a known row still describes a file of this size and mtime (rsync's quick check)."""
    return (
        old.get("mtime_ns") == mtime_ns
        and old.get("size_bytes") == size
        and (old.get("status") == "ok" or old.get("error_code") in STABLE_ERRORS)
    )


def _remote_mtime_ns(entry: RemoteFile) -> int | None:
    return None if entry.mtime is None else int(entry.mtime.timestamp() * 1_000_000) * 1000


def _error(row: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    row["status"] = "error"
    row["error_code"] = code
    row["error_message"] = message
    return row


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


_TAG = {name: tag for tag, name in ExifTags.TAGS.items()}


def read_exif(img: Image.Image) -> dict[str, Any]:
    """EXIF fields users ask for; anything malformed is left out, never raised."""
    out: dict[str, Any] = {}
    try:
        exif = img.getexif()
    except Exception:  # malformed EXIF must not fail the image: keep what parses (nothing here)
        return out
    ifd = _safe(lambda: exif.get_ifd(ExifTags.IFD.Exif)) or {}
    out["exif_make"] = _text(exif.get(_TAG["Make"]))
    out["exif_model"] = _text(exif.get(_TAG["Model"]))
    orientation = exif.get(_TAG["Orientation"])
    out["exif_orientation"] = int(orientation) if isinstance(orientation, int) else None
    out["exif_datetime"] = _exif_datetime(
        ifd.get(_TAG["DateTimeOriginal"]) or exif.get(_TAG["DateTime"])
    )
    out["exif_exposure_time"] = _number(ifd.get(_TAG["ExposureTime"]))
    out["exif_f_number"] = _number(ifd.get(_TAG["FNumber"]))
    iso = ifd.get(_TAG["ISOSpeedRatings"])
    out["exif_iso"] = _number(iso[0] if isinstance(iso, tuple) and iso else iso)
    out["exif_focal_length"] = _number(ifd.get(_TAG["FocalLength"]))
    gps = _safe(lambda: exif.get_ifd(ExifTags.IFD.GPSInfo)) or {}
    out["gps_lat"] = _gps_degrees(gps.get(2), gps.get(1))
    out["gps_lon"] = _gps_degrees(gps.get(4), gps.get(3))
    return out


def _safe(fn):
    try:
        return fn()
    except Exception:  # a malformed sub-IFD is dropped; the rest of the EXIF still counts
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = value.strip("\x00 ").strip()
        return value or None
    return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if number == number else None  # NaN from 0/0 rationals


def _exif_datetime(value: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _gps_degrees(dms: Any, ref: Any) -> float | None:
    try:
        degrees, minutes, seconds = (float(v) for v in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if _text(ref) in ("S", "W"):
        value = -value
    return round(value, 7)
