"""The engine plan: one resolution of device, precision (asked, lake holds, measured, default),
decode, compile, workers and batch size, and the one line a run logs."""

from __future__ import annotations

import pytest
import torch

from embedlake.tasks import engine, precision
from embedlake.tasks.params import COMPILE_AUTO_MIN_IMAGES, RunParams
from embedlake.tasks.precision import PrecisionChoice

pytestmark = pytest.mark.unit


def _measured(chosen: str = "fp32"):
    calls = []

    def measure() -> PrecisionChoice:
        calls.append(chosen)
        return PrecisionChoice(chosen, {chosen: 0.01}, {chosen: 1.0})

    return measure, calls


def _not_measured() -> PrecisionChoice:
    raise AssertionError("nothing is measured when an earlier step answers")


@pytest.fixture
def native_bf16(monkeypatch):
    """Set whether the CPU computes bf16 natively (this machine's CPU does not)."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
        monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)

    return set_native


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_asked_beats_what_the_lake_holds_and_is_never_measured():
    assert engine._precision("fp32", "cpu", {"bf16"}, _not_measured) == ("fp32", "asked")


def test_bf16_asked_on_a_cpu_without_native_bf16_is_kept_as_asked(native_bf16):
    native_bf16(False)
    assert engine._precision("bf16", "cpu", set(), _not_measured) == ("bf16", "asked")


def test_fp16_asked_on_the_cpu_is_refused():
    with pytest.raises(ValueError, match="--precision fp16 needs a CUDA device"):
        engine._precision("fp16", "cpu", set(), _not_measured)


def test_what_the_lake_holds_beats_measuring(native_bf16):
    native_bf16(False)
    assert engine._precision("auto", "cpu", {"fp32"}, _not_measured) == ("fp32", "lake holds")


def test_a_lake_holding_bf16_is_kept_only_where_the_cpu_computes_bf16(native_bf16):
    native_bf16(True)
    assert engine._precision("auto", "cpu", {"bf16"}, _not_measured) == ("bf16", "lake holds")
    native_bf16(False)  # bf16 is no candidate here: measured (fp32), the lake's rows not reused
    measure, calls = _measured("fp32")
    assert engine._precision("auto", "cpu", {"bf16"}, measure) == ("fp32", "measured")
    assert calls == ["fp32"]


def test_a_lake_holding_two_usable_precisions_is_measured(native_bf16):
    native_bf16(True)
    measure, calls = _measured("bf16")
    assert engine._precision("auto", "cpu", {"bf16", "fp32"}, measure) == ("bf16", "measured")
    assert calls


def test_measured_beats_the_default():
    measure, calls = _measured("fp32")
    assert engine._precision("auto", "cpu", set(), measure) == ("fp32", "measured")
    assert calls == ["fp32"]


def test_a_cuda_device_this_process_cannot_reach_takes_the_default(no_cuda):
    # a Ray cluster's GPU: nothing to measure here, fp16 as CUDA's default
    assert engine._precision("auto", "cuda", set(), _not_measured) == ("fp16", "default")
    assert engine._default_precision("cuda") == "fp16"


def test_the_cpu_default_is_bf16_only_with_native_bf16(native_bf16):
    native_bf16(True)
    assert engine._default_precision("cpu") == "bf16"
    native_bf16(False)
    assert engine._default_precision("cpu") == "fp32"


def test_cuda_unavailable(no_cuda, tmp_path):
    assert engine.resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="--device cuda: no CUDA device is available"):
        engine.resolve_device("cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        engine.resolve_device("cuda:1")
    params = RunParams(source=".", lake=str(tmp_path), device="cuda", precision="fp32")
    with pytest.raises(ValueError, match="no CUDA device is available"):
        engine.plan_run(params, [], _empty_lake(tmp_path), lambda p: 0)
    with pytest.raises(ValueError, match="--decode device needs a CUDA device"):
        engine._decode("device", "cpu")


def _empty_lake(tmp_path):
    from embedlake.tasks.lake import Lake

    return Lake.at(tmp_path / "lake").ensure()


def test_a_cpu_run_plan_and_its_log_line(no_cuda, tmp_path):
    params = RunParams(source=".", device="auto", precision="fp32", workers=2)
    asked: list[str] = []
    plan = engine.plan_run(params, [], _empty_lake(tmp_path), lambda p: asked.append(p) or 5)
    assert asked == ["fp32"]  # compile is settled on what lacks an embedding at the precision
    assert plan == engine.EnginePlan("cpu", "fp32", "asked", "pillow", False, 2, 16, "cpu")
    assert plan.line() == (
        "engine: device=cpu precision=fp32 (asked) decode=pillow compile=off workers=2 batch=16"
    )


def test_a_ray_driver_plans_for_the_clusters_gpus(no_cuda, tmp_path):
    params = RunParams(source=".", batch_size=None, workers=0)
    lake = _empty_lake(tmp_path)
    plan = engine.plan_run(params, [], lake, lambda p: COMPILE_AUTO_MIN_IMAGES, cluster_gpus=2)
    assert (plan.device, plan.local_device) == ("cuda", "cpu")
    assert (plan.precision, plan.why) == ("fp16", "default")
    assert (plan.decode, plan.compile, plan.batch_size) == ("device", True, 256)
    assert "device=cuda (here cpu) precision=fp16 (default)" in plan.line()
    assert plan.on_this_node(3).workers == 3
    # an asked device is this process's own, cluster or not
    asked = params.model_copy(update={"device": "cpu", "precision": "fp32"})
    cpu = engine.plan_run(asked, [], lake, lambda p: 0, cluster_gpus=2)
    assert (cpu.device, cpu.local_device, cpu.decode) == ("cpu", "cpu", "pillow")
    assert cpu.batch_size == 16


def test_compile_and_workers():
    assert engine._compile("auto", "cuda", COMPILE_AUTO_MIN_IMAGES)
    assert not engine._compile("off", "cuda", 10**9)
    assert engine.decode_workers(0) == 0 and engine.decode_workers(5) == 5
    assert 1 <= engine.decode_workers(-1) <= 8


def test_a_query_plan_takes_the_lakes_precision(no_cuda):
    plan, note = engine.plan_query("auto", "fp32")
    assert (plan.device, plan.precision, plan.why, note) == ("cpu", "fp32", "lake holds", None)
    plan, note = engine.plan_query("cpu", "fp16")
    assert (plan.precision, plan.why) == ("fp32", "default") and "fp16" in note
