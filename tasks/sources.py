"""Where a collection lives: a local folder, or any fsspec URL (`memory://`, `s3://`, ...).

A local folder (or a `file://` URL) is walked with the skip rules of `tasks.discover` and read in
place; decode workers open the files themselves. Any other URL is listed and read through fsspec
in this process, and decode workers receive the bytes, so filesystems that live in one process
(`memory://`) and ones that need credentials work alike. `s3://` needs the `s3` extra (s3fs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["RemoteFile", "RemoteSource", "open_source", "path_from_readable", "readable_path"]


@dataclass(frozen=True)
class RemoteFile:
    rel: str
    size: int
    mtime: datetime | None


class RemoteSource:
    """A collection behind an fsspec filesystem."""

    def __init__(self, uri: str):
        import fsspec

        try:
            self.fs, self.root = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as exc:
            raise ValueError(f"source {uri}: {exc}") from exc
        self.root = self.root.rstrip("/")
        self.uri = uri
        if not self.fs.isdir(self.root):
            raise FileNotFoundError(f"source {uri} is not a folder")

    def __str__(self) -> str:
        return self.uri

    def list_files(self, skip: list[str] | None = None) -> list[RemoteFile]:
        """Every file under the root, in sorted order; hidden names and `skip` URLs' contents
        (a lake kept under SOURCE) are left out."""
        prefixes = tuple(url.rstrip("/") + "/" for url in skip or [])
        found = []
        for name, info in sorted(self.fs.find(self.root, detail=True, withdirs=False).items()):
            rel = name[len(self.root) :].lstrip("/")
            if not rel or any(part.startswith(".") for part in rel.split("/")):
                continue
            if prefixes and self.fs.unstrip_protocol(name).startswith(prefixes):
                continue
            found.append(RemoteFile(rel, int(info.get("size") or 0), _mtime(info)))
        return found

    def read(self, rel: str) -> bytes:
        return self.fs.cat_file(f"{self.root}/{rel}")


def _mtime(info: dict[str, Any]) -> datetime | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=UTC)
    return None


# A backslash that would read as an escape is itself escaped, so no two names share a `path`.
_LOOKALIKE = re.compile(r"\\(?=x[0-9a-fA-F]{2})")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def readable_path(raw: bytes) -> str:
    """The `path` text of a relative path given as bytes: valid UTF-8, readable, unique.

    A name that is valid UTF-8 stays as it is. A byte that is not part of valid UTF-8 becomes
    `\\xNN` (`caf\\xe9.jpg` for Latin-1 `café.jpg`), and a backslash already followed by `xNN`
    becomes `\\x5c`, so a real file named `caf\\xe9.jpg` reads `caf\\x5cxe9.jpg`: the mapping is
    one-to-one and `path_from_readable` inverts it.
    """
    text = _LOOKALIKE.sub(lambda _: "\\x5c", raw.decode("utf-8", "surrogateescape"))
    # surrogateescape turned each undecodable byte into U+DC80..U+DCFF
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in text)


def path_from_readable(text: str) -> bytes:
    """The exact bytes behind a `path` text (the inverse of `readable_path`)."""
    return _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), text.encode("utf-8"))


def open_source(source: str) -> Path | RemoteSource:
    """A resolved local folder, or a RemoteSource for any other URL."""
    if source.startswith("file://"):
        source = source.removeprefix("file://")
    if "://" in source:
        return RemoteSource(source)
    # params carry a local name as readable text (`RunParams.source`): back to the real name
    path = Path(os.fsdecode(path_from_readable(source))).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"source {source} is not a folder")
    return path
