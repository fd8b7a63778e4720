"""The heap is trimmed when resident memory has grown, not after every batch."""

import pytest

from embedlake.tasks import embed

pytestmark = pytest.mark.unit


def test_trims_only_past_the_growth_limit(monkeypatch):
    if embed._LIBC is None:
        pytest.skip("no malloc_trim in this C library")
    readings = iter([1000, 1050, 1099, 1200, 1000, 1150, 1101])
    monkeypatch.setattr(embed, "_resident_bytes", lambda: next(readings))
    trimmer = embed._HeapTrimmer(growth=0.10)
    trimmer()  # first batch: sets the limit at 1100
    trimmer()
    trimmer()
    assert trimmer.trims == 0
    trimmer()  # 1200 > 1100: trim; 1000 after it keeps the limit at 1100
    assert trimmer.trims == 1 and trimmer.limit == pytest.approx(1100)
    trimmer()  # 1150: trim again; 1101 after it raises the limit to 1211.1
    assert trimmer.trims == 2 and trimmer.limit == pytest.approx(1211.1)


def test_reads_this_process_rss():
    rss = embed._resident_bytes()
    assert rss is not None and rss > 10 * 2**20
