"""Query by example, the pure parts: group choice, where weights come from, decode, the scan."""

from __future__ import annotations

import numpy as np
import pytest

from embedlake.tasks.similar import (
    LakeGroup,
    SimilarError,
    _precision_here,
    choose_groups,
    decode_query,
    nearest_in_blocks,
    weights_source_for,
)
from embedlake.tasks.weights import WeightsError, WeightsSource
from tests.conftest import jpeg_bytes, photo

pytestmark = pytest.mark.unit

MOBILE = "mobilenet_v1_0.25_128"


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("block", [1, 7, 50, 1000])
@pytest.mark.parametrize("k", [1, 5, 60])
def test_blocked_scan_equals_brute_force(block, k):
    rng = np.random.default_rng(block * 100 + k)
    keys, queries = _unit(rng, 50), _unit(rng, 3)
    ids = [f"img{i:02d}" for i in range(50)]
    blocks = [(ids[i : i + block], keys[i : i + block]) for i in range(0, 50, block)]
    found = nearest_in_blocks(queries, blocks, k)
    scores = queries @ keys.T
    for q in range(3):
        order = np.argsort(-scores[q])[:k]
        assert [i for i, _ in found[q]] == [ids[j] for j in order]
        assert np.allclose([s for _, s in found[q]], scores[q, order], atol=1e-6)


def test_an_image_stored_twice_counts_once():
    rng = np.random.default_rng(0)
    keys, query = _unit(rng, 4), _unit(rng, 1)
    keys[3] = query[0]
    ids = ["a", "b", "c", "d"]
    # image d is in two parts (a duplicate row the embeddings view would hide)
    found = nearest_in_blocks(query, [(ids, keys), (["d"], keys[3:])], 3)
    assert [i for i, _ in found[0]].count("d") == 1
    assert found[0][0][0] == "d" and found[0][0][1] == pytest.approx(1.0)
    assert nearest_in_blocks(query, [], 3) == [[]]


STORED = [
    ("xception", "random-seed0:aaaa", "fp32"),
    ("xception", "random-seed0:aaaa", "bf16"),
    ("xception", "file-x.safetensors:bbbb", "fp32"),
    (MOBILE, "random-seed0:cccc", "bf16"),
]


def _run(ids: dict[str, str], precision: str, **params) -> dict:
    return {"weights": ids, "precision": precision, "params": params}


def test_the_latest_finished_run_chooses_the_group():
    runs = [  # newest first
        _run({"xception": "file-x.safetensors:bbbb"}, "fp32", weights="xception=/w/x.safetensors"),
        _run({"xception": "random-seed0:aaaa", MOBILE: "random-seed0:cccc"}, "bf16"),
    ]
    groups = choose_groups(STORED, runs)
    assert groups == [
        LakeGroup(MOBILE, "random-seed0:cccc", "bf16"),
        LakeGroup("xception", "file-x.safetensors:bbbb", "fp32"),
    ]
    assert groups[1].run_params == {"weights": "xception=/w/x.safetensors"}
    # the older run's xception: --weights picks it, at that run's precision
    picked = choose_groups(STORED, runs, ["xception"], {"xception": "random-seed0:aaaa"})
    assert picked == [LakeGroup("xception", "random-seed0:aaaa", "bf16")]


def test_groups_without_a_finished_run():
    # one group per backbone: taken; several: the user must choose
    assert choose_groups(STORED, [], [MOBILE]) == [LakeGroup(MOBILE, "random-seed0:cccc", "bf16")]
    with pytest.raises(SimilarError, match="none from a finished run: choose with --weights"):
        choose_groups(STORED, [], ["xception"])


def test_backbones_and_weights_the_lake_lacks_are_refused():
    with pytest.raises(SimilarError, match=r"no mobilenet_v1 embeddings \(it holds: mobilenet"):
        choose_groups(STORED, [], ["mobilenet_v1"])
    with pytest.raises(SimilarError, match=r"made with weights random-seed0:dddd \(it holds: "):
        choose_groups(STORED, [], [MOBILE], {MOBILE: "random-seed0:dddd"})
    with pytest.raises(SimilarError, match="the lake holds no embeddings yet"):
        choose_groups([], [])


def test_weights_source_read_off_the_weights_id(tmp_path):
    assert weights_source_for(LakeGroup(MOBILE, "random-seed0:cccc", "fp32")).kind == "random"
    imagenet = LakeGroup("xception", "legacy_xception.tf_in1k:abcd", "fp16")
    assert weights_source_for(imagenet) == WeightsSource("imagenet")
    (tmp_path / "xception.safetensors").write_bytes(b"")
    params = {"weights": str(tmp_path), "backbones": [MOBILE, "xception"]}
    found = weights_source_for(LakeGroup("xception", "file-xception.safetensors:1", "fp32", params))
    assert found == WeightsSource("file", tmp_path / "xception.safetensors")
    pairs = {"weights": f"{MOBILE}=/gone.pt,xception={tmp_path / 'xception.safetensors'}"}
    found = weights_source_for(LakeGroup("xception", "file-xception.safetensors:1", "fp32", pairs))
    assert found == WeightsSource("file", tmp_path / "xception.safetensors")
    gone = LakeGroup("xception", "file-x.safetensors:1", "fp32", {"weights": "xception=/gone.pt"})
    with pytest.raises(WeightsError, match="pass --weights xception=PATH"):
        weights_source_for(gone)
    with pytest.raises(WeightsError, match="origin embedlake does not know"):
        weights_source_for(LakeGroup("xception", "somewhere:1", "fp32"))


def test_decode_query_cuts_the_runs_crops_or_says_why(tmp_path):
    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.decode import crop_plans, decode_for_backbones

    plans = crop_plans({n: resolve_backbone(n).data_config() for n in (MOBILE, "xception")})
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(photo("chelsea.png")))
    crops = decode_query(str(good), plans, 10**8)
    assert crops[MOBILE].shape == (128, 128, 3) and crops["xception"].shape == (299, 299, 3)
    expected = decode_for_backbones(good, plans, 10**8)
    assert all(np.array_equal(crops[n], expected[n]) for n in expected)
    assert decode_query(f"file://{good}", plans, 10**8).keys() == crops.keys()
    with pytest.raises(SimilarError, match="missing.jpg: cannot be read"):
        decode_query(str(tmp_path / "missing.jpg"), plans, 10**8)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(SimilarError, match="bad.jpg: corrupt: "):
        decode_query(str(tmp_path / "bad.jpg"), plans, 10**8)
    with pytest.raises(SimilarError, match="good.jpg: decompression_bomb: "):
        decode_query(str(good), plans, 100)


def test_fp16_lakes_are_queried_at_fp32_on_a_cpu_and_said_so():
    assert _precision_here("fp16", "cuda") == ("fp16", None)
    assert _precision_here("bf16", "cpu") == ("bf16", None)
    precision, note = _precision_here("fp16", "cpu")
    assert precision == "fp32" and "fp16" in note
