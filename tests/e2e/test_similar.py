"""`embedlake similar`: query by example against a lake built by `embedlake run`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import jpeg_bytes, photo, run_cli

pytestmark = pytest.mark.e2e

BACKBONES = ("mobilenet_v1_0.25_128", "mobilenet_v1_0.5_160")


@pytest.fixture(scope="module")
def lake(collection, tmp_path_factory, prefect_api) -> tuple[Path, dict[str, str]]:
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    env.pop("EMBEDLAKE_LAKE", None)
    lake = tmp_path_factory.mktemp("similar") / "lake"
    backbones = [arg for name in BACKBONES for arg in ("--backbone", name)]
    done = run_cli(
        "run", str(collection[0]), "--lake", str(lake), *backbones, "--weights", "random", env=env
    )
    assert done.returncode == 0, done.stderr
    return lake, env


def _listing(lake: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns) for p in lake.rglob("*")
    }


def _similar(lake: Path, env: dict[str, str], *args: str):
    """`embedlake similar ARGS --lake LAKE`, checking that it left the lake as it was."""
    before = _listing(lake)
    done = run_cli("similar", *args, "--lake", str(lake), env=env)
    assert _listing(lake) == before
    return done


def _copy(tmp_path: Path, name: str) -> Path:
    """A half-size copy of a lake photo, recompressed at JPEG quality 60."""
    img = photo(name)
    path = tmp_path / f"{name.split('.')[0]}_half_q60.jpg"
    path.write_bytes(jpeg_bytes(img.resize((img.width // 2, img.height // 2)), quality=60))
    return path


def test_a_resized_recompressed_copy_finds_its_original_first(lake, tmp_path):
    root, env = lake
    chelsea, coffee = _copy(tmp_path, "chelsea.png"), _copy(tmp_path, "coffee.png")
    done = _similar(root, env, str(chelsea), str(coffee), "--k", "3", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert list(rows[0]) == ["query", "backbone", "rank", "path", "image_id", "similarity"]
    assert len(rows) == 2 * len(BACKBONES) * 3
    firsts = {(r["query"], r["backbone"]): r for r in rows if r["rank"] == 1}
    for backbone in BACKBONES:
        for query, original in ((chelsea, "good/chelsea.jpg"), (coffee, "good/coffee.jpg")):
            first = firsts[(str(query), backbone)]
            assert first["path"] == original
            assert first["similarity"] > 0.99
    ranks = [(r["query"], r["backbone"], r["rank"]) for r in rows]
    assert ranks == sorted(ranks, key=lambda q: ([str(chelsea), str(coffee)].index(q[0]), q[1:]))


def test_a_lake_image_itself_gets_its_stored_embedding_back(lake, collection):
    # the same bytes, weights and precision: the stored embedding, so similarity 1 to rounding
    # (0.999 allows for a CUDA run, whose JPEGs nvJPEG decoded; the query goes through Pillow)
    root, env = lake
    query = collection[0] / "good" / "rocket.jpg"
    done = _similar(root, env, str(query), "--backbone", BACKBONES[1], "--k", "2")
    assert done.returncode == 0, done.stderr
    assert "good/rocket.jpg" in done.stdout and BACKBONES[0] not in done.stdout
    assert "(2 rows)" in done.stdout
    done = _similar(root, env, str(query), "--k", "1", "--format", "csv")
    rows = done.stdout.splitlines()
    assert rows[0] == '"query","backbone","rank","path","image_id","similarity"'
    for row in rows[1:]:
        assert '"good/rocket.jpg"' in row and float(row.split(",")[-1]) > 0.999
    assert len(rows) == 1 + len(BACKBONES)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot be read"),
        (b"not an image at all", "corrupt"),
        ("truncated", "truncated"),
    ],
)
def test_a_broken_query_image_is_one_line(lake, tmp_path, content, message):
    root, env = lake
    query = tmp_path / "query.jpg"
    if content == "truncated":
        content = jpeg_bytes(photo("chelsea.png"))[:3000]
    if content is not None:
        query.write_bytes(content)
    done = _similar(root, env, str(query))
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("embedlake: error: query image") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_weights_that_did_not_make_the_lake_are_refused(lake, tmp_path):
    root, env = lake
    query = _copy(tmp_path, "chelsea.png")
    other = tmp_path / "other.safetensors"
    _save_random_weights(BACKBONES[0], seed=1, path=other)
    weights = f"{BACKBONES[0]}={other}"
    done = _similar(root, env, str(query), "--backbone", BACKBONES[0], "--weights", weights)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"embedlake: error: the lake holds no {BACKBONES[0]} embeddings made with weights "
        "file-other.safetensors:"
    )
    assert len(done.stderr.splitlines()) == 1
    done = _similar(root, env, str(query), "--backbone", "xception")
    assert done.returncode == 1
    assert "the lake holds no xception embeddings (it holds: mobilenet_v1_0.25_128, " in done.stderr


def test_reloaded_weights_must_reproduce_the_lakes_weights_id(lake, tmp_path, monkeypatch):
    from embedlake.tasks import similar
    from embedlake.tasks.weights import WeightsError, WeightsSource

    root, _ = lake
    changed = tmp_path / "changed.safetensors"
    _save_random_weights(BACKBONES[0], seed=1, path=changed)
    # as if the file a lake was made with had been overwritten since
    monkeypatch.setattr(similar, "weights_source_for", lambda g: WeightsSource("file", changed))
    with pytest.raises(WeightsError, match=r"made with weights random-seed0:\w+, but file weights"):
        similar.find_similar(root, [str(_copy(tmp_path, "chelsea.png"))], backbones=[BACKBONES[0]])


def _save_random_weights(name: str, seed: int, path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from embedlake.tasks.backbones import build_model, resolve_backbone

    torch.manual_seed(seed)
    save_file(build_model(resolve_backbone(name)).state_dict(), str(path))
