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
import itertools
import os
import stat
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
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
    "Listing",
    "LISTING_SCHEMA",
    "iter_source_files",
    "walk_source",
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
    return [Path(name) for name, _ in walk_source(source, skip)]


def walk_source(
    source: Path, skip: list[Path] | None = None
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path, directory entry) of every regular file under `source` by the skip rules above,
    lazily, in a stable order: a folder's files by name, then its folders by name, each in turn
    (os.walk's order). One `scandir` per folder; a file costs no system call here (its type comes
    from the listing) unless it is a symlink, whose target is checked. An unreadable folder is
    left out, as os.walk leaves it."""
    source = source.resolve()
    skip_resolved = {p.resolve() for p in (skip or [])}
    folders = [str(source)]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            continue
        below = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if Path(entry.path).resolve() not in skip_resolved:
                    below.append(entry.path)
            elif entry.is_file(follow_symlinks=False) or (
                entry.is_symlink() and _is_regular_file(Path(entry.path), source)
            ):
                yield entry.path, entry
        folders.extend(reversed(below))


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
) -> Iterator[list[tuple[dict[str, Any], bool]]]:
    """Probe every file under `source`, yielding (row, False) pairs in chunks of at most
    `chunk_rows` (in the listing's order), so a caller can write each chunk before the next is
    read. `skip`: folders (local paths) or URLs whose contents are not inventoried (the lake).
    A rerun probes only what changed (tasks.inventory: `Listing.write`, then `Listing.probe`)."""
    with Listing(source, skip) as listing:
        for rows in listing.probed(max_pixels, chunk_rows):
            yield [(row, False) for row in rows]


# the stat of every file under SOURCE, as a rerun compares it with the previous run's rows
LISTING_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),  # the listing's order
        ("path", pa.string()),  # readable_path of the name
        ("name", pa.binary()),  # the exact relative name (local) or the remote file's index
        ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()),  # None: unknown (a failed stat, a store without mtimes)
    ]
)


class Listing:
    """The files under SOURCE by the skip rules: their stats (`write`), and their `files` rows
    (`probe`, by the `name`s the listing holds). Local folders are walked lazily, so memory does
    not follow the number of files; a remote store is listed whole by fsspec."""

    def __init__(self, source: Path | RemoteSource, skip: list[Path | str] | None = None):
        if isinstance(source, RemoteSource):
            self.source: Path | RemoteSource = source
            self.remote = source.list_files([s for s in skip or [] if isinstance(s, str)])
        else:
            self.source = source.resolve()
            self.skip = [s for s in skip or [] if isinstance(s, Path)]
            self.remote = []

    def keys(self) -> Iterator[tuple[bytes, str, int | None, int | None]]:
        """(name, path, size, mtime_ns) per file, in the listing's order (the stat is taken
        here; a file that fails it has size and mtime None: its probe says why)."""
        if isinstance(self.source, RemoteSource):
            for index, entry in enumerate(self.remote):
                rel = readable_path(entry.rel.encode("utf-8", "surrogateescape"))
                yield str(index).encode(), rel, entry.size, _remote_mtime_ns(entry)
            return
        start = len(str(self.source)) + 1
        for name, entry in walk_source(self.source, self.skip):
            raw = os.fsencode(name[start:])
            try:
                info = entry.stat()
                size, mtime_ns = info.st_size, info.st_mtime_ns
            except OSError:
                size = mtime_ns = None
            yield raw, readable_path(raw), size, mtime_ns

    def write(self, dest: Path, batch_rows: int = 65_536) -> int:
        """The listing as a Parquet file at `dest` (streamed: memory is one batch); its rows."""
        seq = 0
        with pq.ParquetWriter(dest, LISTING_SCHEMA) as writer:
            for chunk in _chunks(self.keys(), batch_rows):
                names, paths, sizes, mtimes = zip(*chunk, strict=True)
                seqs = range(seq, seq + len(chunk))
                columns = [seqs, paths, names, sizes, mtimes]
                arrays = [pa.array(c, f.type) for c, f in zip(columns, LISTING_SCHEMA, strict=True)]
                writer.write_batch(pa.record_batch(arrays, schema=LISTING_SCHEMA))
                seq += len(chunk)
        return seq

    def probe(self, names: Iterable[bytes], max_pixels: int) -> list[dict[str, Any]]:
        """The `files` rows of files of the listing, by name, probed on threads (hashing is I/O
        bound and releases the GIL). Use the listing in a `with` block: it owns the threads."""
        return list(self._pool.map(lambda name: self._probe_one(name, max_pixels), names))

    def probed(self, max_pixels: int, chunk_rows: int) -> Iterator[list[dict[str, Any]]]:
        """Every file's row, in chunks of at most `chunk_rows`, in the listing's order."""
        for chunk in _chunks(self.keys(), chunk_rows):
            yield self.probe((key[0] for key in chunk), max_pixels)

    def __enter__(self) -> Listing:
        self._pool = ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2))
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

    def _probe_one(self, name: bytes, max_pixels: int) -> dict[str, Any]:
        if isinstance(self.source, RemoteSource):
            return probe_remote_file(self.source, self.remote[int(name)], max_pixels)
        return probe_file(self.source / os.fsdecode(name), self.source, max_pixels)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


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
