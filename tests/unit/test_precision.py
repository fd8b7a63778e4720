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
    passing = [p for p, c in choice.min_cosine.items() if c >= precision.TOLERANCE]
    assert choice.precision == min(passing, key=choice.seconds_per_image.__getitem__)
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
