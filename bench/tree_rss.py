"""`embedlake run` in a subprocess, with the peak RSS of its whole process tree (not a test).

The tree is the CLI, Prefect's temporary server, the forkserver and the decode workers. Two
figures bracket the true peak:
- `peak_rss_mb`: the largest sum of the tree's RSS over samples taken every `interval` seconds
  (a lower bound: a spike shorter than the interval can fall between two samples);
- `peak_rss_mb_hwm_sum`: the sum of each process's own high-water mark (`VmHWM`, kept by the
  kernel, last read while the process was alive); an upper bound, as the processes need not
  peak at the same moment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["SAMPLE_INTERVAL", "run_embedlake"]

SAMPLE_INTERVAL = 0.1  # seconds between samples of the process tree


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    for marker, role in (
        ("uvicorn", "prefect_server"),
        ("forkserver", "forkserver"),
        ("embedlake.flows.cli", "embedlake"),
    ):
        if marker in text:
            return role
    return "decode_worker"


def _high_water_mark(pid: int) -> int:
    """The process's peak RSS in bytes so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_embedlake(
    source: Path,
    lake: Path,
    env: dict,
    extra: tuple[str, ...] = (),
    interval: float = SAMPLE_INTERVAL,
) -> dict:
    """`embedlake run SOURCE --weights random`: wall time, peak tree RSS, the run's own row."""
    import duckdb
    import psutil

    command = [
        sys.executable,
        "-m",
        "embedlake.flows.cli",
        "run",
        str(source),
        "--lake",
        str(lake),
        "--weights",
        "random",
        *extra,
    ]
    started = time.perf_counter()
    # stderr to a file, not a pipe: the loop below never reads a pipe, so a run (or the Prefect
    # server it starts, which inherits it) that wrote more than a pipe holds would block
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
        root = psutil.Process(proc.pid)
        peak, peak_by_role, hwm, samples = 0, {}, {}, 0
        while proc.poll() is None:
            total, by_role = 0, {}
            try:
                for p in [root, *root.children(recursive=True)]:
                    rss = p.memory_info().rss
                    total += rss
                    role = _role(p.cmdline())
                    by_role[role] = by_role.get(role, 0) + rss
                    hwm[p.pid] = max(hwm.get(p.pid, 0), _high_water_mark(p.pid))
            except psutil.Error:
                pass  # a process ended between listing and reading it: the next sample counts again
            samples += 1
            if total > peak:
                peak, peak_by_role = total, by_role
            time.sleep(interval)
        wall = time.perf_counter() - started
        proc.wait()
        err_file.seek(0)
        err = err_file.read()
    if proc.returncode != 0:
        raise RuntimeError(f"embedlake run failed: {err.decode()[-2000:]}")
    with duckdb.connect(str(lake / "catalog.duckdb"), read_only=True) as con:
        row = con.execute(
            "SELECT n_embedded, images_per_second, stage_seconds, device, precision "
            "FROM runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    return {
        "wall_seconds": wall,
        "peak_rss_mb": peak / 2**20,
        "peak_rss_mb_hwm_sum": sum(hwm.values()) / 2**20,
        "peak_rss_mb_by_process": {k: round(v / 2**20) for k, v in peak_by_role.items()},
        "rss_sample_interval_seconds": interval,
        "rss_samples": samples,
        "n_embedded": row[0],
        "embed_rate_in_run": row[1],
        "stage_seconds": json.loads(row[2]),
        "device": row[3],
        "precision": row[4],
    }
