"""`--precision auto` measures: the fastest candidate within cosine 0.999 of fp32, cached."""

import pytest

from embedlake.tasks import precision
from embedlake.tasks.backbones import resolve_backbone
from embedlake.tasks.weights import load_backbone, parse_weights_spec

pytestmark = pytest.mark.unit


def _loaded(names):
    sources = parse_weights_spec("random", names)
    return [load_backbone(resolve_backbone(n), sources[n]) for n in names]


def test_auto_picks_the_fastest_precision_within_tolerance_and_caches_it(tmp_path):
    loaded = _loaded(["mobilenet_v1", "xception"])
    cache = tmp_path / "precision.json"
    choice = precision.choose_precision(loaded, "cpu", cache)
    assert choice.measured
    assert set(choice.seconds_per_image) == set(precision.candidates("cpu"))
    passing = [p for p in precision.candidates("cpu") if choice.min_cosine[p] >= 0.999]
    fastest = min(choice.seconds_per_image[p] for p in passing)
    # the first candidate within the tie margin of the fastest (noise does not flip the choice)
    expected = next(
        p for p in passing if choice.seconds_per_image[p] <= fastest * (1 + precision.TIE_MARGIN)
    )
    assert choice.precision == expected
    assert choice.min_cosine[choice.precision] >= 0.999
    again = precision.choose_precision(loaded, "cpu", cache)
    assert not again.measured and again.precision == choice.precision
    assert "precision auto -> " in again.describe()


def test_a_candidate_outside_the_tolerance_is_not_chosen_however_fast():
    loaded = _loaded(["mobilenet_v1"])
    options = precision.candidates("cpu")
    if options == ["fp32"]:
        pytest.skip("only fp32 on this CPU")
    strict = precision._measure(loaded, "cpu", options, tolerance=0.999999)
    for p in options:
        if strict.min_cosine[p] < 0.999999:
            assert strict.precision != p
    assert strict.min_cosine[strict.precision] >= 0.999999


def test_non_finite_embeddings_fail_the_tolerance():
    import numpy as np

    good = {"a": np.eye(2, dtype=np.float32)}
    assert precision.min_cosine(good, good) == pytest.approx(1.0)
    overflowed = {"a": np.array([[np.nan, 0], [0, 1]], dtype=np.float32)}
    assert precision.min_cosine(overflowed, good) == -1.0


def test_auto_keeps_the_precision_the_lake_holds_for_these_weights(tmp_path):
    """A run at fp32 first: `auto` then finds those embeddings instead of measuring bf16."""
    import numpy as np

    from embedlake.tasks import lake as lakes
    from embedlake.tasks.engine import plan_run
    from embedlake.tasks.params import RunParams

    loaded = _loaded(["mobilenet_v1"])
    location = lakes.Lake.at(tmp_path / "lake")
    location.ensure()
    part = lakes.embeddings_table(
        image_ids=["a" * 64],
        backbone="mobilenet_v1",
        weights_id=loaded[0].weights_id,
        precision="fp32",
        vectors=np.ones((1, 1024), dtype=np.float32) / 32,
        norms=np.ones(1, dtype=np.float32),
        run_id="r1",
    )
    location.write_part(part, "embeddings", "r1.parquet")
    params = RunParams(source=".", lake=str(location), device="cpu")
    held = plan_run(params, loaded, location, lambda precision: 0)
    assert held.precision == "fp32" and held.why == "lake holds"
    # other weights: nothing stored for them, so auto measures (and never picks a failing one)
    other = _loaded(["mobilenet_v1_0.25_128"])
    chosen = plan_run(params, other, location, lambda precision: 0)
    assert chosen.precision in precision.candidates("cpu") and chosen.why == "measured"
