"""A read-only view of one folder of an fsspec filesystem, for DuckDB's read connections.

DuckDB's read-only mode covers the database file only: `COPY ... TO`, `EXPORT DATABASE` and their
`EXPLAIN ANALYZE` forms still write any file inside `allowed_directories`. So a read connection
does not reach the lake through a filesystem that can write: it is given this wrapper
(`con.register_filesystem`), which opens files for reading only, lists and stats them, refuses
every other operation and every path outside its root, and `allowed_directories` names only
paths under the wrapper's protocol. A local lake is read as `embedlake-ro:///abs/lake/...` (the
local filesystem itself stays out of reach); a URL lake keeps its own protocol (`s3://...`), now
served by the wrapper instead of the writable filesystem.

A lake written by an older embedlake lacks the tables added since (no folder, no schema part),
and a view over a glob that matches nothing does not bind, so every query failed until a writer
ran. The wrapper can show such a table as its zero-row schema part (`virtual`: bytes it serves
from memory, listed beside what is really there): the table reads as empty, which it is, and
nothing is written to the lake to make it so.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import threading
from datetime import UTC, datetime
from typing import Any

from fsspec.spec import AbstractFileSystem

__all__ = ["LOCAL_PROTOCOL", "ReadOnlyFileSystem"]

LOCAL_PROTOCOL = "embedlake-ro"
_EPOCH = datetime.fromtimestamp(0, UTC)  # a virtual file's modification time


class ReadOnlyFileSystem(AbstractFileSystem):
    """Read-only access to `root` (a path as `fs` names it) of `fs`, under `protocol`."""

    cachable = False  # one per connection, never shared through fsspec's instance cache

    def __init__(
        self,
        fs: AbstractFileSystem,
        root: str,
        protocol: str | tuple[str, ...],
        virtual: dict[str, bytes] | None = None,
    ):
        """`virtual`: files shown under the root that are not there (path relative to the root
        -> bytes), for tables an older lake lacks; a real file of the same name wins."""
        super().__init__()
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.protocol = protocol
        self.virtual = {
            posixpath.join(self.root, name): data for name, data in (virtual or {}).items()
        }

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

    def _shown(self, path: str) -> str | None:
        """The virtual file at `path` (inside the root) when nothing real is there."""
        if path in self.virtual and not self.fs.exists(path):
            return path
        return None

    def _virtual_info(self, path: str) -> dict:
        return {"name": path, "size": len(self.virtual[path]), "type": "file", "mtime": 0}

    def _virtual_in(self, folder: str) -> list[str]:
        return [p for p in self.virtual if posixpath.dirname(p) == folder and self._shown(p)]

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode not in ("rb", "r"):
            raise PermissionError(f"{path}: the lake is read-only here")
        inside = self._inside(path)
        if self._shown(inside):
            return io.BytesIO(self.virtual[inside])
        return _ThreadSafeReader(self.fs.open(inside, "rb", **kwargs))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        inside = self._inside(path)
        extra = self._virtual_in(inside.rstrip("/"))
        if extra and not self.fs.isdir(inside):
            return [self._virtual_info(p) if detail else p for p in extra]
        found = self.fs.ls(inside, detail=detail, **kwargs)
        return found + [self._virtual_info(p) if detail else p for p in extra]

    def info(self, path: str, **kwargs: Any) -> dict:
        inside = self._inside(path)
        if self._shown(inside):
            return self._virtual_info(inside)
        if self._virtual_in(inside.rstrip("/")) and not self.fs.exists(inside):
            return {"name": inside, "size": 0, "type": "directory"}
        return self.fs.info(inside, **kwargs)

    def glob(self, path: str, **kwargs: Any) -> Any:
        inside = self._inside(path)
        found = list(self.fs.glob(inside, **kwargs))
        extra = [p for p in self.virtual if fnmatch.fnmatchcase(p, inside) and self._shown(p)]
        return sorted(found + extra)

    def exists(self, path: str, **kwargs: Any) -> bool:
        inside = self._inside(path)
        return bool(self._shown(inside)) or self.fs.exists(inside, **kwargs)

    def isdir(self, path: str) -> bool:
        inside = self._inside(path)
        return self.fs.isdir(inside) or bool(self._virtual_in(inside.rstrip("/")))

    def isfile(self, path: str) -> bool:
        inside = self._inside(path)
        return bool(self._shown(inside)) or self.fs.isfile(inside)

    def modified(self, path: str) -> Any:
        inside = self._inside(path)
        return _EPOCH if self._shown(inside) else self.fs.modified(inside)

    def size(self, path: str) -> int | None:
        inside = self._inside(path)
        return len(self.virtual[inside]) if self._shown(inside) else self.fs.size(inside)

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
