"""A read-only view of one folder of an fsspec filesystem, for DuckDB's read connections.

DuckDB's read-only mode covers the database file only: `COPY ... TO`, `EXPORT DATABASE` and their
`EXPLAIN ANALYZE` forms still write any file inside `allowed_directories`. So a read connection
does not reach the lake through a filesystem that can write: it is given this wrapper
(`con.register_filesystem`), which opens files for reading only, lists and stats them, refuses
every other operation and every path outside its root, and `allowed_directories` names only
paths under the wrapper's protocol. A local lake is read as `embedlake-ro:///abs/lake/...` (the
local filesystem itself stays out of reach); a URL lake keeps its own protocol (`s3://...`), now
served by the wrapper instead of the writable filesystem.
"""

from __future__ import annotations

import io
import posixpath
import threading
from typing import Any

from fsspec.spec import AbstractFileSystem

__all__ = ["LOCAL_PROTOCOL", "ReadOnlyFileSystem"]

LOCAL_PROTOCOL = "embedlake-ro"


class ReadOnlyFileSystem(AbstractFileSystem):
    """Read-only access to `root` (a path as `fs` names it) of `fs`, under `protocol`."""

    cachable = False  # one per connection, never shared through fsspec's instance cache

    def __init__(self, fs: AbstractFileSystem, root: str, protocol: str | tuple[str, ...]):
        super().__init__()
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.protocol = protocol

    def _inside(self, path: str) -> str:
        """`path` without its protocol, normalised; refused unless it lies under the root."""
        _, sep, rest = str(path).partition("://")
        path = rest if sep else str(path)
        norm = posixpath.normpath(path)
        if path.startswith("//"):  # normpath keeps a leading '//', which names the same folder
            norm = "/" + norm.lstrip("/")
        if norm != self.root and not norm.startswith(self.root.rstrip("/") + "/"):
            raise PermissionError(f"{path}: outside the lake")
        return norm

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode not in ("rb", "r"):
            raise PermissionError(f"{path}: the lake is read-only here")
        return _ThreadSafeReader(self.fs.open(self._inside(path), "rb", **kwargs))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        return self.fs.ls(self._inside(path), detail=detail, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict:
        return self.fs.info(self._inside(path), **kwargs)

    def glob(self, path: str, **kwargs: Any) -> Any:
        return self.fs.glob(self._inside(path), **kwargs)

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self.fs.exists(self._inside(path), **kwargs)

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(self._inside(path))

    def isfile(self, path: str) -> bool:
        return self.fs.isfile(self._inside(path))

    def modified(self, path: str) -> Any:
        return self.fs.modified(self._inside(path))

    def size(self, path: str) -> int | None:
        return self.fs.size(self._inside(path))

    def invalidate_cache(self, path: str | None = None) -> None:
        self.fs.invalidate_cache(None if path is None else self._inside(path))

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError("the lake is read-only here")

    # every way fsspec (and DuckDB through it) writes, moves or deletes
    mkdir = makedirs = rmdir = rm = rm_file = _rm = cp_file = copy = mv = _refuse
    put_file = put = pipe_file = pipe = touch = _refuse


class _ThreadSafeReader(io.RawIOBase):
    """One open file read by several DuckDB threads at once: DuckDB seeks, then reads, in two
    calls, and another thread's seek in between made a read start at the wrong place (a short
    read, "Failed to read N bytes from Python file"). Each thread keeps its own position here,
    and a lock makes each seek-and-read on the shared file one step."""

    def __init__(self, handle: Any):
        super().__init__()
        self._handle = handle
        self._lock = threading.Lock()
        self._where = threading.local()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return getattr(self._where, "position", 0)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.tell()
        elif whence == io.SEEK_END:
            with self._lock:
                offset += self._handle.seek(0, io.SEEK_END)
        self._where.position = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            self._handle.seek(self.tell())
            data = self._handle.read(size)
        self._where.position = self.tell() + len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()
