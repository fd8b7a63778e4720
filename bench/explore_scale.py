"""The explorer at scale: a synthetic lake of N points, `embedlake explore`, headless chromium.

What is synthetic: the lake holds no images and no embeddings. The bench writes, with the lake's
own schemas, one finished run, its `files` rows (N distinct image_ids: SHA-256 of the row number;
paths `cluster_KK/img_NNNNNNNN.jpg`; a fixed size, format and pixel count), a sidecar with `label`
(one of 20 clusters) and `split`, and one map group (`synthetic`, x and y around 20 Gaussian
clusters), then builds the catalog. The explorer reads it as it reads any lake.

Measured, each in one run on this machine:
- the page's first full paint of every point in headless Debian chromium (WebGL2 on SwiftShader,
  the CPU): from navigation to the points fetched (binary float32), coloured (binary codes) and
  drawn (one draw call, then gl.finish()); and the page's own count of points drawn;
- a filter over the lake's `images` joined with its metadata (`label = 'c03' AND split = 'test'`),
  answered as a bitmask: the server's time, and over N rows of `images`;
- the server's RSS (the `embedlake explore` process, sampled every 0.1 s, and its high-water mark).

    python bench/explore_scale.py --n 1000000   # writes bench/measured/explore-1000000.json
    python bench/explore_scale.py --n 10000000 --no-browser

Goals (issue 20): 1 M points painted in <= 3 s; the server <= 1 GiB at 10 M rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedlake.tasks.catalog import build_catalog
from embedlake.tasks.schemas import FILES_SCHEMA, MAP_SCHEMA, RUNS_SCHEMA, SCHEMA_PART, TABLES

CHUNK = 1_000_000
RUN_ID = "20260101T000000Z-000001"
GROUP = ("synthetic", "synthetic:0000", "fp16")
CLUSTERS = 20


def _ids(first: int, n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(first, first + n)]


def write_lake(lake: Path, n: int, seed: int = 0) -> dict:
    """The synthetic lake (see the module's docstring); seconds and bytes."""
    started = time.perf_counter()
    for table in TABLES:  # every table's zero-row schema part, as a writer's ensure() makes
        (lake / table).mkdir(parents=True, exist_ok=True)
    from embedlake.tasks.schemas import SCHEMAS

    for table, schema in SCHEMAS.items():
        pq.write_table(schema.empty_table(), lake / table / SCHEMA_PART)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    runs = []
    for stage, status in (
        ("started", "running"),
        ("discovered", "running"),
        ("finished", "finished"),
    ):
        runs.append(
            {
                "run_id": RUN_ID,
                "stage": stage,
                "started_at": t0,
                "finished_at": t0 + timedelta(hours=1) if stage == "finished" else None,
                "status": status,
                "source": "/synthetic",
                "n_files": n,
                "n_ok": n,
                "files_snapshot": True,
            }
        )
    for k, row in enumerate(runs):
        table = pa.Table.from_pylist([row]).cast(
            pa.schema([RUNS_SCHEMA.field(name) for name in row])
        )
        pq.write_table(table, lake / "runs" / f"{RUN_ID}-{k}-{row['stage']}.parquet")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(CLUSTERS, 2))
    for part, first in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - first)
        ids = _ids(first, m)
        cluster = rng.integers(0, CLUSTERS, size=m)
        paths = [f"cluster_{c:02d}/img_{first + i:08d}.jpg" for i, c in enumerate(cluster)]
        files = pa.table(
            {
                "run_id": pa.array([RUN_ID] * m),
                "path": pa.array(paths),
                "size_bytes": pa.array(np.full(m, 100_000, np.int64)),
                "image_id": pa.array(ids),
                "status": pa.array(["ok"] * m),
                "format": pa.array(["JPEG"] * m),
                "width": pa.array(np.full(m, 640, np.int32)),
                "height": pa.array(np.full(m, 480, np.int32)),
                "recorded_at": pa.array([t0] * m, pa.timestamp("us", tz="UTC")),
            }
        )
        files = files.cast(pa.schema([FILES_SCHEMA.field(name) for name in files.column_names]))
        pq.write_table(
            files, lake / "files" / f"{RUN_ID}-{part:06d}.parquet", row_group_size=131072
        )
        meta = pa.table(
            {
                "path": pa.array(paths),
                "image_id": pa.array(ids),
                "label": pa.array([f"c{c:02d}" for c in cluster]),
                "split": pa.array(np.where(rng.random(m) < 0.2, "test", "train")),
            }
        )
        # the metadata view reads one part: the whole sidecar is appended to one writer below
        if part == 0:
            meta_writer = pq.ParquetWriter(lake / "metadata" / f"{RUN_ID}.parquet", meta.schema)
        meta_writer.write_table(meta)
        xy = centres[cluster] + rng.normal(0, 1.5, size=(m, 2))
        order = np.argsort(np.array(ids))
        mapped = pa.table(
            {
                "image_id": pa.array(ids).take(order),
                "backbone": pa.array([GROUP[0]] * m),
                "weights_id": pa.array([GROUP[1]] * m),
                "precision": pa.array([GROUP[2]] * m),
                "x": pa.array(xy[order, 0].astype(np.float32)),
                "y": pa.array(xy[order, 1].astype(np.float32)),
                "map_version": pa.array(np.ones(m, np.int32)),
                "placed": pa.array(["fit"] * m),
                "run_id": pa.array([RUN_ID] * m),
            },
            schema=MAP_SCHEMA,
        )
        pq.write_table(mapped, lake / "map" / f"synthetic-00000001-{RUN_ID}-{part:06d}.parquet")
        del files, meta, mapped, ids, paths
    meta_writer.close()
    build_catalog(lake)
    size = sum(p.stat().st_size for p in lake.rglob("*") if p.is_file())
    return {"seconds": round(time.perf_counter() - started, 1), "bytes": size}


class RssSampler(threading.Thread):
    """Peak RSS of one process, sampled every 0.1 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:
                return


def high_water(pid: int) -> int | None:
    """VmHWM of a live process (Linux), bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Refused(RuntimeError):
    """The server answered with an error (its one line, and after how long)."""


def fetch(url: str, timeout: float = 1800) -> tuple[float, bytes, dict]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            headers = dict(response.headers)
    except urllib.error.HTTPError as exc:
        seconds = time.perf_counter() - started
        raise Refused(f"{exc.code} after {seconds:.1f} s: {exc.read().decode()[:300]}") from exc
    return time.perf_counter() - started, body, headers


def browser_paint(url: str, n: int, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function("window.explorer && window.explorer.ready", timeout=600_000)
        wall = time.perf_counter() - started
        inside = page.evaluate(
            "({drawn: window.explorer.drawn, points: window.explorer.points,"
            " loadMs: window.explorer.loadMs, firstPaintMs: window.explorer.firstPaintMs})"
        )
        # a repaint of every point (pan): the draw alone
        repaint = page.evaluate(
            """() => { const t = performance.now(); window.explorer.state.view.cx += 0.5;
            paint(); document.getElementById('map').getContext('webgl2').finish();
            return performance.now() - t; }"""
        )
        browser.close()
    return {
        "first_full_paint_s": round(wall, 3),
        "page_points_to_painted_ms": round(inside["loadMs"], 1),
        "navigation_to_painted_ms": round(inside["firstPaintMs"], 1),
        "drawn": inside["drawn"],
        "points": inside["points"],
        "repaint_ms": round(repaint, 1),
        "expected_points": n,
    }


def filter_direct(lake: Path, where: str, memory: str) -> dict:
    """The explorer's filter statement (sql/explore/filter.sql with `where`) on a read-only
    connection of this process, without the server: its time over the lake's `images`."""
    import resource

    from embedlake.tasks.catalog import check_read_only, connect_read_only, sql_text

    text = sql_text("explore", "filter.sql").replace("@WHERE@", where)
    started = time.perf_counter()
    with connect_read_only(lake, memory_limit=memory) as con:
        (statement,) = check_read_only(con, text)
        matches = len(con.sql(statement).fetchall())
    return {
        "where": where,
        "seconds": round(time.perf_counter() - started, 3),
        "matches": matches,
        "memory_limit": memory,
        "bench_process_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--lake", help="keep (or reuse) the synthetic lake here")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--server-timeout", type=float, default=1800, help="the server's --timeout (seconds)"
    )
    parser.add_argument("--server-memory", default="384MB", help="the server's --memory-limit")
    parser.add_argument(
        "--filter-only", action="store_true", help="time the filter's statement alone, no server"
    )
    args = parser.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    keep = args.lake is not None
    lake = Path(args.lake or tempfile.mkdtemp(prefix="explore-bench-")) / "lake"
    result: dict = {
        "what": "embedlake explore on a synthetic lake (no images, no embeddings: files, "
        "metadata and one map group written directly; see bench/explore_scale.py)",
        "n": args.n,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(["python", *sys.argv]),
    }
    if args.filter_only:  # the filter's statement alone, in this process (no server, no map)
        if not (lake / "catalog.duckdb").exists():
            result["write_lake"] = write_lake(lake, args.n)
        result["filter_direct"] = filter_direct(
            lake, "label = 'c03' AND split = 'test'", args.server_memory
        )
        print(json.dumps(result, indent=2))
        out = Path(args.out or Path(__file__).parent / "measured" / f"explore-filter-{args.n}.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if not (lake / "catalog.duckdb").exists():
        result["write_lake"] = write_lake(lake, args.n)
        print("lake written", result["write_lake"], flush=True)
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "embedlake.flows.cli", "explore", "--lake", str(lake)),
            *("--port", "0", "--timeout", str(args.server_timeout)),
            *("--memory-limit", args.server_memory),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sampler = RssSampler(server.pid)
    sampler.start()
    try:
        url = server.stdout.readline().split()[2]
        result["server_idle_rss_mib"] = round(sampler.process.memory_info().rss / 2**20, 1)
        result["server_memory_limit"] = args.server_memory
        _, body, _ = fetch(url + "api/groups")
        g = urllib.parse.quote("/".join(GROUP), safe="")
        seconds, body, headers = fetch(f"{url}api/points?g={g}")
        result["points_request"] = {
            "seconds": round(seconds, 3),
            "bytes": len(body),
            "count": int(headers["X-Count"]),
        }
        print("points", result["points_request"], flush=True)
        seconds, body, headers = fetch(f"{url}api/colors?g={g}&by=label")
        result["colors_request"] = {"seconds": round(seconds, 3), "bytes": len(body)}
        where = "label = 'c03' AND split = 'test'"
        filters = []
        for _ in range(2):
            seconds, body, headers = fetch(
                f"{url}api/filter?g={g}&where={urllib.parse.quote(where)}"
            )
            filters.append(round(seconds, 3))
        result["filter"] = {
            "where": where,
            "rows_in_images": args.n,
            "seconds": filters,
            "matches": int(headers["X-Count"]),
            "bitmask_bytes": len(body),
        }
        print("filter", result["filter"], flush=True)
        if not args.no_browser and chromium:
            result["browser"] = browser_paint(url, args.n, chromium)
            print("browser", result["browser"], flush=True)
    except Refused as exc:  # recorded, with the memory it had reached
        result["failed"] = str(exc)
        print("failed:", exc, flush=True)
    finally:
        result["server_peak_rss_mib_sampled"] = round(sampler.peak / 2**20, 1)
        hwm = high_water(server.pid)
        result["server_peak_rss_mib_hwm"] = round(hwm / 2**20, 1) if hwm else None
        sampler.done.set()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        if not keep:
            shutil.rmtree(lake.parent, ignore_errors=True)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["goals"] = {
        "paint_1m_s": 3.0,
        "server_rss_10m_gib": 1.0,
    }
    out = Path(args.out or Path(__file__).parent / "measured" / f"explore-{args.n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
