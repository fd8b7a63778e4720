"""A neighbour-graph group's ANN index: faiss IVF-SQ8 segments in the lake, searched one at a time.

Layout, per group (`graph.group_name`), under `LAKE/index/<group>/`:
- `trained-<token>.faiss`: the trained, empty index (coarse centroids, the 8-bit quantiser's
  ranges). Every segment is a copy of it with codes added, so all segments share their lists.
- `seg-<seq>-<token>.faiss` + `.parquet`: a segment's codes, and the image_id of each of its
  labels (row i = label i). A segment holds at most `SEGMENT_BYTES` of codes.
- `manifest.json`: the live segments and the embedding parts they cover, renamed into place
  last: the commit point of an update. Files it does not name are leftovers of a killed update,
  deleted by the next commit.

Nothing is loaded whole. A search maps one segment's file (`IO_FLAG_MMAP`), searches it, and
unmaps it before the next, so memory follows a segment, not the collection; the results are
merged per query. An update adds segments and merges small ones (so a query visits few); what is
written is never rewritten in place. Which rows are new is known from the embedding parts the
manifest covers (parts are immutable and each key is stored once), not from a set of every
image_id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Container, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import ivf_scan, lake, topk

__all__ = ["FACTORY", "NPROBE", "BadIndex", "GroupIndex", "check_group_name", "remove_index"]

# chosen by bench/index_choice.py (README, "The neighbour graph"): IVF lists of 8-bit scalar
# quantised codes (a quarter of float32), recall@10 near HNSW-flat's. The coarse quantiser is
# exact (flat): a vector goes to its nearest centroid's list, nlist x dim dot products done as one
# matrix product per block. An HNSW graph over the centroids (indexes written before) sent a share
# of the vectors to other lists, and searching it widely enough cost more than the exact scan: at
# 1 M, recall@10 0.911 (efSearch 16) and 0.973 (128) against 0.980 exact, adding 1 M vectors 123
# and 370 s against 76 (bench/quantizer_choice.py, bench/measured/quantizer-choice-1000000.json).
FACTORY = "IVF{nlist},SQ8"
NPROBE = 32
# an index written with an HNSW quantiser keeps it (its vectors' lists); it is searched, and
# added to, at this efSearch at least (faiss's default is 16)
QUANTIZER_EF = 128
INDEX_FOLDER = lake.INDEX_FOLDER
SEGMENT_BYTES = 512 * 2**20
MAX_SMALL_SEGMENTS = 8  # more segments below half SEGMENT_BYTES than this: merge them
MAX_NLIST = 4096
TRAIN_PER_LIST = 39  # faiss's own minimum of training points per centroid
_ID_GROUP_ROWS = 2048  # a label's image_id is read with its row group: 2,048 ids, ~130 KB
_MANIFEST = "manifest.json"
_log = logging.getLogger("embedlake")

# The only names the writer makes (`_token()`: 6 hex digits). A manifest comes from the lake,
# which may be crafted: its names are joined to folders only once they match these.
_SEGMENT_NAME = re.compile(r"^seg-\d{6,}-[0-9a-f]{6}$")
_TRAINED_NAME = re.compile(r"^trained-[0-9a-f]{6}$")
# graph.group_name: <backbone>-<precision>-<12 hex digits of the key's hash>
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.]+-[A-Za-z0-9_]+-[0-9a-f]{12}$")


class BadIndex(ValueError):
    """An index in the lake that is not one embedlake wrote; the message (one line) says why."""


def check_group_name(name: str) -> str:
    """`name` if it is a group name `graph.group_name` makes (one safe folder name)."""
    if not _GROUP_NAME.match(name):
        raise BadIndex(f"not an index group name: {name!r}")
    return name


@dataclass
class Segment:
    name: str  # file stem: <name>.faiss and <name>.parquet
    rows: int


@dataclass
class Manifest:
    factory: str
    dim: int
    nlist: int
    trained: str
    segments: list[Segment] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # embedding parts whose rows are indexed
    next_seq: int = 1

    @staticmethod
    def parse(text: str | bytes, group: str) -> Manifest:
        """The manifest of `group`'s index; BadIndex unless it has the writer's form."""
        try:
            raw = json.loads(text)
            raw["segments"] = [Segment(**s) for s in raw["segments"]]
            manifest = Manifest(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadIndex(f"index {group}: unreadable manifest ({exc})") from exc
        names = [(manifest.trained, _TRAINED_NAME)]
        names += [(s.name, _SEGMENT_NAME) for s in manifest.segments]
        for name, form in names:
            if not isinstance(name, str) or not form.match(name):
                raise BadIndex(
                    f"index {group}: its manifest names {name!r}, not a file embedlake writes; "
                    "refusing it (`embedlake reindex` rebuilds the index)"
                )
        counts = [manifest.dim, manifest.nlist, manifest.next_seq]
        counts += [s.rows for s in manifest.segments]
        parts = manifest.parts
        if not all(type(n) is int and n >= 0 for n in counts) or not (
            isinstance(parts, list) and all(isinstance(p, str) for p in parts)
        ):
            raise BadIndex(f"index {group}: its manifest's counts or parts are malformed")
        return manifest


def _no_prefetch(ivf) -> None:
    """A mapped segment's lists read on the searching thread alone. faiss's OnDiskInvertedLists
    prefetches the probed lists on 32 threads of its own by default: on lists in the page cache
    that is CPU spent for nothing (8,192 queries, one OpenMP thread: 6.3 s wall and 8.5 s of CPU
    with it, 5.4 and 5.4 without), and beside other workers it takes their cores."""
    import faiss

    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if isinstance(lists, faiss.OnDiskInvertedLists):
        lists.prefetch_nthread = 0


def _tuned(index):
    """`index` with a coarse quantiser that is an HNSW graph (an index written before the flat
    quantiser) searched at QUANTIZER_EF at least: it keeps its vectors' lists, but adds and
    searches at it from now on."""
    import faiss

    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(quantizer.hnsw.efSearch, QUANTIZER_EF)
    return index


def _nlist(n: int) -> int:
    """Inverted lists for about n vectors: 4 sqrt(n), within 16 .. MAX_NLIST."""
    return int(np.clip(4 * np.sqrt(n), 16, MAX_NLIST))


def _token() -> str:
    return secrets.token_hex(3)


class GroupIndex:
    """One group's segmented index. `open` or `create`, `add`, `search`, then `commit`."""

    def __init__(self, root: lake.Lake, name: str, manifest: Manifest):
        self.root, self.name, self.manifest = root, name, manifest
        self.folder = _folder(root, name)
        self.pending: list[Segment] = []  # written, not yet in the committed manifest
        self.nprobe = NPROBE
        self._trained_index = None  # read once, for its coarse quantiser (`_coarse`)

    # ------------------------------------------------------------------ opening and creating

    @classmethod
    def open(
        cls, root: lake.Lake, name: str, covered: Callable[[set[str]], list[str]] | None = None
    ) -> GroupIndex | None:
        """The group's committed index, or None. `covered(ids)`: the embedding parts whose rows
        of the group are all among `ids` (to convert an index of embedlake 0.2)."""
        folder = _folder(root, name)
        if isinstance(root, lake.UrlLake):
            _pull(root, folder, name)
        path = folder / _MANIFEST
        if not path.exists():
            return _convert_legacy(root, name, covered) if covered else None
        return cls(root, name, Manifest.parse(path.read_text(), name))

    @classmethod
    def create(cls, root: lake.Lake, name: str, n: int, sample: np.ndarray) -> GroupIndex:
        """A new, empty index for about `n` vectors, trained on `sample` (rows of the group)."""
        import faiss

        nlist = max(1, min(_nlist(n), len(sample) // TRAIN_PER_LIST))
        factory = FACTORY.format(nlist=nlist)
        index = faiss.index_factory(sample.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        _tuned(index)
        manifest = Manifest(factory, sample.shape[1], nlist, f"trained-{_token()}")
        self = cls(root, name, manifest)
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_index(index, self.folder / f"{manifest.trained}.faiss")
        return self

    @staticmethod
    def train_rows(n: int) -> int:
        """How many sample rows `create` wants for about `n` vectors."""
        return TRAIN_PER_LIST * _nlist(n)

    @property
    def ntotal(self) -> int:
        return sum(s.rows for s in self.manifest.segments + self.pending)

    def _empty(self):
        import faiss

        return _tuned(faiss.read_index(str(self.folder / f"{self.manifest.trained}.faiss")))

    # ------------------------------------------------------------------------------ adding

    def add(self, blocks: Iterable[tuple[np.ndarray, np.ndarray]], parts: list[str]) -> int:
        """Index the (image_ids, vectors) blocks as new segments covering `parts`; rows added.

        Nothing is visible to other readers until `commit`.
        """
        index, ids, added = None, [], 0
        code_size = None
        for block_ids, vectors in blocks:
            if index is None:
                index = self._empty()
                code_size = index.sa_code_size()
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            ids.append(np.asarray(block_ids, object))
            added += len(block_ids)
            if index.ntotal * code_size >= SEGMENT_BYTES:
                self._write_segment(index, ids)
                index, ids = None, []
        if index is not None and index.ntotal:
            self._write_segment(index, ids)
        self.manifest.parts = sorted(set(self.manifest.parts) | set(parts))
        return added

    def _write_segment(self, index, ids: list[np.ndarray]) -> Segment:
        seg = Segment(f"seg-{self.manifest.next_seq:06d}-{_token()}", int(index.ntotal))
        self.manifest.next_seq += 1
        labels = pa.array(np.concatenate(ids), pa.string())
        lake.write_part_atomically(
            pa.table({"image_id": labels}),
            self.folder / f"{seg.name}.parquet",
            row_group_rows=_ID_GROUP_ROWS,
        )
        _write_index(index, self.folder / f"{seg.name}.faiss")
        self.pending.append(seg)
        return seg

    def compact(self) -> None:
        """Merge the small segments when there are many: a query then visits few files."""
        small = [
            s
            for s in self.manifest.segments + self.pending
            if s.rows * self._code_size() < SEGMENT_BYTES // 2
        ]
        if len(small) <= MAX_SMALL_SEGMENTS:
            return
        merged = set()
        blocks = []
        rows = 0
        for seg in sorted(small, key=lambda s: s.rows):
            if rows and (rows + seg.rows) * self._code_size() > SEGMENT_BYTES:
                break
            blocks.append(seg)
            rows += seg.rows
        if len(blocks) < 2:
            return
        import faiss

        index, ids = self._empty(), []
        for seg in blocks:
            part = faiss.read_index(str(self.folder / f"{seg.name}.faiss"))
            faiss.extract_index_ivf(index).merge_from(faiss.extract_index_ivf(part), index.ntotal)
            index.ntotal = faiss.extract_index_ivf(index).ntotal
            ids.append(self._labels(seg))
            merged.add(seg.name)
            del part
        self.manifest.segments = [s for s in self.manifest.segments if s.name not in merged]
        self.pending = [s for s in self.pending if s.name not in merged]
        self._write_segment(index, ids)
        _log.info("index %s: %d segments merged into one", self.name, len(merged))

    def _code_size(self) -> int:
        return self.manifest.dim  # SQ8: one byte per dimension

    # ---------------------------------------------------------------------------- searching

    def _labels(self, seg: Segment) -> np.ndarray:
        """Every image_id of a segment, label order."""
        table = pq.read_table(self.folder / f"{seg.name}.parquet", columns=["image_id"])
        return table.column("image_id").to_numpy(zero_copy_only=False)

    def _names(self, seg: Segment, labels: np.ndarray) -> np.ndarray:
        """The image_ids of some of a segment's labels (-1: None), reading only the row groups
        that hold them (a one-image query reads a few KiB, not the segment's id column)."""
        out = np.full(labels.shape, None, object)
        found = labels >= 0
        file = pq.ParquetFile(self.folder / f"{seg.name}.parquet")
        sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
        starts = np.cumsum([0, *sizes])
        group = np.searchsorted(starts, labels, side="right") - 1
        for g in np.unique(group[found]):
            ids = file.read_row_group(int(g), columns=["image_id"]).column(0)
            here = found & (group == g)
            out[here] = ids.to_numpy(zero_copy_only=False)[labels[here] - starts[g]]
        return out

    def segments(self) -> list[Segment]:
        """The committed segments, then those added since."""
        return self.manifest.segments + self.pending

    # --------------------------------------------------------------- searching from elsewhere

    def view(self) -> dict:
        """What another process needs to search this index as this one sees it (its pending
        segments too), as plain data: `GroupIndex.from_view` opens it. For a URL lake the
        pending segments are uploaded first (not the manifest: other readers see nothing until
        `commit`, and a killed update's uploads are leftovers the next commit deletes); those
        the remote has are not sent again."""
        if isinstance(self.root, lake.UrlLake):  # the trained file too: a new index's
            live = {f"{s.name}.{ext}" for s in self.pending for ext in ("faiss", "parquet")}
            live.add(f"{self.manifest.trained}.faiss")
            _push(self.root, self.folder, self.name, live, manifest=False)
        manifest = asdict(self.manifest)
        manifest["segments"] = [asdict(s) for s in self.segments()]
        return {
            "lake": str(self.root),
            "name": self.name,
            "manifest": manifest,
            "nprobe": self.nprobe,
        }

    @classmethod
    def from_view(cls, view: dict) -> GroupIndex:
        """The index `view` describes, its files fetched to this machine's copy of a URL lake.
        Its names are checked as a manifest read from the lake is: nothing outside the index
        folder is opened."""
        root = lake.Lake.at(view["lake"])
        name = check_group_name(view["name"])
        manifest = Manifest.parse(json.dumps(view["manifest"]), name)
        self = cls(root, name, manifest)
        self.nprobe = int(view["nprobe"])
        if isinstance(root, lake.UrlLake):
            self.folder.mkdir(parents=True, exist_ok=True)
            _fetch(root, self.folder, name, manifest)
        elif not (self.folder / f"{manifest.trained}.faiss").is_file():
            raise BadIndex(
                f"index {name}: not found under {root} from {os.uname().nodename}: a worker "
                "on another machine needs the lake at a URL or on a folder every node mounts"
            )
        return self

    def search(
        self,
        queries: np.ndarray,
        k: int,
        query_ids: np.ndarray | None = None,
        among: Container[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, image_ids) of each query's k best, best first, over every segment
        (those added since the last commit too); unfound slots are -inf / None.

        A query's own id (`query_ids`) and ids not `among` those given are left out: while that
        leaves fewer than k of a query whose probed lists held more, the search asks for twice
        as many.
        """
        n = len(queries)
        want = max(1, min(k + (query_ids is not None), self.ntotal))
        while True:
            sims, ids = self._search(queries, want)
            full = np.isfinite(sims).sum(1) >= want  # the probed lists may hold more
            out = np.zeros(ids.shape, bool)
            if query_ids is not None:
                out |= ids == np.asarray(query_ids, object).reshape(n, 1)
            if among is not None:
                out |= np.vectorize(lambda i: i not in among, otypes=[bool])(ids)
            sims[out] = -np.inf
            if want >= self.ntotal or not (full & (np.isfinite(sims).sum(1) < k)).any():
                break
            want = min(2 * want, self.ntotal)
        ids, sims = topk.merge(*_unfound(n, k), ids, sims, k)
        ids[~np.isfinite(sims)] = None
        return sims, ids

    def _coarse(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, list numbers) of the nprobe lists each query probes, found once by the trained
        index's coarse quantiser. Every segment is a copy of that trained index (its centroids
        and lists), so a query probes the same lists in each, where each segment's own search
        would find them again (at 10 M, in each of 21 segments)."""
        import faiss

        if self._trained_index is None:
            path = self.folder / f"{self.manifest.trained}.faiss"
            self._trained_index = _tuned(faiss.read_index(str(path)))
        ivf = faiss.extract_index_ivf(self._trained_index)
        return ivf.quantizer.search(queries, min(self.nprobe, ivf.nlist))

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, image_ids) of each query's k best over every segment, one segment
        mapped at a time; unfound slots are -inf / None."""
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        segments = self.segments()
        probe_s, probed = self._coarse(queries)
        # a hit is (segment number << 40 | label): one running top-k over the segments
        best_at, best_s = _unfound(n, k, np.int64(-1))
        for number, seg in enumerate(segments):
            path = self.folder / f"{seg.name}.faiss"
            try:
                index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"index {self.name}: segment {seg.name} unreadable ({exc}); "
                    "it may have been merged by a concurrent update: retry"
                ) from exc
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            _no_prefetch(ivf)
            if ivf_scan.batched(ivf, n, probed.shape[1]):  # a batch: list by list, by BLAS
                threads = faiss.omp_get_max_threads()
                sims, labels = ivf_scan.search_preassigned(
                    ivf, queries, min(k, seg.rows), probed, probe_s, threads
                )
            else:
                ivf.nprobe = probed.shape[1]
                # search_preassigned splits the queries over OpenMP's threads only in mode 3; in
                # the default mode 0 that split is `search`'s, and one thread scanned every
                # query (10 M images, 1,000 queries, 2 cores: 25.4 s wall in mode 0, 15.3 s in
                # mode 3)
                ivf.parallel_mode = 3
                sims, labels = ivf.search_preassigned(queries, min(k, seg.rows), probed, probe_s)
            del ivf, index  # unmaps the segment
            sims[labels < 0] = -np.inf
            at = np.where(labels >= 0, (number << 40) | labels, -1)
            best_at, best_s = topk.merge(best_at, best_s, at, sims, k)
        # names of the winners only: a query reads a few id row groups, not one per hit
        best_id = np.full((n, k), None, object)
        found = np.isfinite(best_s) & (best_at >= 0)
        best_seg, best_label = best_at >> 40, best_at & ((1 << 40) - 1)
        for number in np.unique(best_seg[found]):
            mine = found & (best_seg == number)
            best_id[mine] = self._names(segments[number], best_label[mine])
        return best_s, best_id

    # --------------------------------------------------------------------------- committing

    def commit(self) -> None:
        """Make the pending segments (and merges) visible: the manifest, then the leftovers go."""
        self.manifest.segments = self.manifest.segments + self.pending
        self.pending = []
        _write_atomically(self.folder / _MANIFEST, json.dumps(asdict(self.manifest), indent=1))
        live = {f"{s.name}.{ext}" for s in self.manifest.segments for ext in ("faiss", "parquet")}
        live |= {f"{self.manifest.trained}.faiss", _MANIFEST}
        if isinstance(self.root, lake.UrlLake):
            _push(self.root, self.folder, self.name, live)
        for path in self.folder.iterdir():
            if path.name not in live:
                path.unlink()


def _unfound(n: int, k: int, fill: object = None) -> tuple[np.ndarray, np.ndarray]:
    """k empty slots per query: (ids, similarities) filled with `fill` / -inf."""
    ids = np.full((n, k), fill, object if fill is None else np.int64)
    return ids, np.full((n, k), -np.inf, np.float32)


def remove_index(root: lake.Lake, name: str) -> None:
    """Delete a group's index (the legacy single-file layout too)."""
    folder = _folder(root, name)
    for path in [*folder.glob("*"), *folder.parent.glob(f"{name}.*")]:
        path.unlink()
    if folder.is_dir():
        folder.rmdir()
    if isinstance(root, lake.UrlLake):
        remote = f"{root.root}/{INDEX_FOLDER}"
        for path in root.fs.glob(f"{remote}/{name}/*") + root.fs.glob(f"{remote}/{name}.*"):
            root.fs.rm_file(path)


# ----------------------------------------------------------------------------------- files


def _folder(root: lake.Lake, name: str) -> Path:
    """The local folder of a group's index files (for a URL lake: this machine's copy); not
    created here, so that a reader (`nearest`) writes nothing."""
    base = root.path if root.path is not None else root.local_dir
    return base / INDEX_FOLDER / check_group_name(name)


def _write_atomically(target: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    lake.replace_atomically(target, lambda tmp: tmp.write_bytes(data))


def _write_index(index, target: Path) -> None:
    import faiss

    lake.replace_atomically(target, lambda tmp: faiss.write_index(index, str(tmp)))


def _pull(root: lake.UrlLake, folder: Path, name: str) -> None:
    """Copy the remote manifest, and the files it names that this machine lacks or holds with
    another size than the remote's (a download cut short by a kill)."""
    remote = f"{root.root}/{INDEX_FOLDER}/{name}"
    root.fs.invalidate_cache(remote)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        text = root.fs.cat_file(f"{remote}/{_MANIFEST}")
    except FileNotFoundError:
        (folder / _MANIFEST).unlink(missing_ok=True)
        for path in root.fs.glob(f"{root.root}/{INDEX_FOLDER}/{name}.*"):  # legacy layout
            root.fs.get_file(path, str(folder.parent / path.rsplit("/", 1)[-1]))
        return
    _fetch(root, folder, name, Manifest.parse(text, name))  # parsed before anything is fetched
    _write_atomically(folder / _MANIFEST, text)


def _fetch(root: lake.UrlLake, folder: Path, name: str, manifest: Manifest) -> None:
    """Download the files `manifest` names that this machine lacks or holds with another size
    than the remote's (a download cut short by a kill)."""
    remote = f"{root.root}/{INDEX_FOLDER}/{name}"
    root.fs.invalidate_cache(remote)  # a listing cached by an earlier search lacks new segments
    # listed after the manifest was read: a segment it names is immutable, so its size is known
    sizes = {p["name"].rsplit("/", 1)[-1]: p["size"] for p in root.fs.ls(remote, detail=True)}
    wanted = [f"{manifest.trained}.faiss"] + [
        f"{s.name}.{ext}" for s in manifest.segments for ext in ("faiss", "parquet")
    ]
    for file in wanted:
        if file not in sizes:
            raise BadIndex(
                f"index {name}: {file} is not in the lake; it may have been merged by a "
                "concurrent update: retry"
            )
        local = folder / file
        if not local.is_file() or local.stat().st_size != sizes[file]:
            _download(root, f"{remote}/{file}", local, sizes[file])


def _download(root: lake.UrlLake, source: str, target: Path, size: int) -> None:
    """Fetch `source` to a temporary name, check its size, rename it to `target`."""
    tmp = target.with_name(f"{target.name}{lake._TMP_MARK}{os.getpid()}-{_token()}")
    try:
        root.fs.get_file(source, str(tmp))
        if (got := tmp.stat().st_size) != size:
            raise BadIndex(f"{source}: {got} bytes arrived of {size}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _push(
    root: lake.UrlLake, folder: Path, name: str, live: set[str], manifest: bool = True
) -> None:
    """Upload the files the remote lacks, the manifest last; then delete the remote's others.
    Not `manifest`: the files alone (no manifest, nothing deleted)."""
    remote = f"{root.root}/{INDEX_FOLDER}/{name}"
    root.fs.invalidate_cache(remote)
    there = {p.rsplit("/", 1)[-1] for p in root.fs.glob(f"{remote}/*")}
    for file in sorted(live - there - {_MANIFEST}):
        _upload(root, folder / file, f"{remote}/{file}")
    if not manifest:
        return
    _upload(root, folder / _MANIFEST, f"{remote}/{_MANIFEST}")
    for file in there - live:
        root.fs.rm_file(f"{remote}/{file}")
    for path in root.fs.glob(f"{root.root}/{INDEX_FOLDER}/{name}.*"):  # legacy layout
        root.fs.rm_file(path)


def _upload(root: lake.UrlLake, local: Path, target: str) -> None:
    if root.object_store:
        root.fs.put_file(str(local), target)
        return
    tmp = f"{target}{lake._TMP_MARK}{os.getpid()}-{_token()}"
    root.fs.put_file(str(local), tmp)
    root.fs.mv(tmp, target)


def _convert_legacy(
    root: lake.Lake, name: str, covered: Callable[[set[str]], list[str]]
) -> GroupIndex | None:
    """An index written by embedlake 0.2 (`index/<group>.faiss` + `<group>.ids-<n>.parquet`, one
    file loaded whole) becomes the first segment of this layout; None when there is none."""
    base = _folder(root, name).parent
    path = base / f"{name}.faiss"
    if not path.exists():
        return None
    import faiss  # only here: a lake without a legacy index needs no faiss (the base install)

    index = faiss.read_index(str(path))
    ids_path = base / f"{name}.ids-{index.ntotal:012d}.parquet"
    labels = pq.read_table(ids_path).column("image_id").to_numpy(zero_copy_only=False)
    empty = faiss.clone_index(index)
    empty.reset()
    ivf = faiss.extract_index_ivf(index)
    manifest = Manifest("legacy", index.d, int(ivf.nlist), f"trained-{_token()}")
    self = GroupIndex(root, name, manifest)
    self.folder.mkdir(exist_ok=True)
    _write_index(empty, self.folder / f"{manifest.trained}.faiss")
    self._write_segment(index, [labels])
    # the parts it covers: those whose rows of this group it all holds
    self.manifest.parts = covered(set(labels))
    self.commit()
    for old in base.glob(f"{name}.*"):
        old.unlink()
    _log.info("index %s: converted from the single-file layout of embedlake 0.2", name)
    return GroupIndex.open(root, name)
