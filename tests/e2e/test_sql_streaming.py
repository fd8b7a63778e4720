"""`embedlake sql` streams its result: peak memory follows a batch, not the result's size."""

from __future__ import annotations

import subprocess
import sys

import pytest

from embedlake.tasks import lake
from embedlake.tasks.catalog import build_catalog

pytestmark = pytest.mark.e2e

_PROBE = """
import resource, sys
from embedlake.flows.cli import main
rc = main(sys.argv[1:])
print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _peak_mib(root, rows: int, fmt: str, out) -> int:
    query = f"SELECT range AS i, repeat('x', 1000) AS pad FROM range({rows})"
    args = ["sql", query, "--lake", str(root), "--format", fmt, "--output", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True
    )
    rc, peak = done.stdout.split()[-2:]
    assert rc == "0", done.stderr
    return int(peak)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_result_ten_times_larger_does_not_take_ten_times_the_memory(tmp_path, fmt):
    root = lake.ensure_lake(tmp_path / "lake")
    build_catalog(root)
    small = _peak_mib(root, 30_000, fmt, tmp_path / f"small.{fmt}")  # ~30 MB of text
    large = _peak_mib(root, 300_000, fmt, tmp_path / f"large.{fmt}")  # ~300 MB of text
    # held whole, the large result alone would add ~270 MiB over the small one's peak
    assert large - small < 100, (small, large)
    if fmt == "csv":
        with open(tmp_path / "large.csv") as handle:
            assert sum(1 for _ in handle) == 300_001
