"""The CPU benchmark's own rules: what it times, and when it says a figure is not to quote."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import throughput  # noqa: E402
import tree_rss  # noqa: E402

pytestmark = pytest.mark.unit


def _result(before: float, after: float) -> dict:
    limit = {
        "images_per_second": (before + after) / 2,
        "before": {"images_per_second": before},
        "after": {"images_per_second": after},
    }
    resolution = {
        "a_forward_limit": limit,
        "c_engine": {
            "images_per_second": 27.0,
            "decode_workers": 1,
            "seconds": 30.0,
            "window_stage_seconds": {"forward": 29.0},
        },
        "c_over_a": 27.0 / limit["images_per_second"],
        "decode_cpu_cost": {"decode_and_crops_ms": 5.5, "jpeg_decode_ms": 0.8},
        "ceiling_c_over_a": 0.92,
    }
    run = {"peak_rss_mb": 2800.0, "peak_rss_mb_hwm_sum": 2810.0, "rss_sample_interval_seconds": 0.1}
    return {
        "cpu_count": 2,
        "torch_threads": 2,
        "precision": "bf16",
        "args": {"seconds": 30.0, "forward_seconds": 15.0},
        "b_naive": {"images_per_second": 5.0},
        "c_640x480": resolution,
        "c_12mp": resolution,
        "peak_rss": {"runs": {"80": run, "800": run}, "ratio_large_over_small": 1.0},
    }


def test_table_flags_a_window_whose_limit_moved():
    steady = throughput.table(_result(30.0, 29.0))
    assert "not figures to quote" not in steady
    assert "sampled every 0.1 s" in steady
    busy = throughput.table(_result(30.0, 20.0))
    assert busy.count("not figures to quote") == 2  # both resolutions
    assert "(a) moved 40%" in busy


def test_high_water_mark_is_at_least_the_current_rss():
    psutil = pytest.importorskip("psutil")
    rss = psutil.Process().memory_info().rss
    assert tree_rss._high_water_mark(os.getpid()) >= rss * 0.99
    assert tree_rss._high_water_mark(2**22 + 12345) == 0  # no such process


def test_naive_recipe_times_neither_model_building_nor_warm_up(tmp_path, monkeypatch):
    from embedlake.tasks import backbones

    build, slow = backbones.build_model, 1.5

    def slow_small_model(spec):  # the small backbone, built slowly
        time.sleep(slow)
        return build(backbones.resolve_backbone("mobilenet_v1_0.25_128"))

    monkeypatch.setattr(backbones, "build_model", slow_small_model)
    paths = throughput.make_photos(tmp_path, 8, (64, 48))
    started = time.perf_counter()
    result = throughput.naive_baseline(paths, batch=4)
    wall = time.perf_counter() - started
    assert wall >= 2 * slow
    assert result["seconds"] < wall - 2 * slow  # the timed region left the builds out
    assert set(result["seconds_per_model"]) == set(throughput.BACKBONES)
