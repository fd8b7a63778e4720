"""Probes and label issues end to end: a collection of four colour families with labels planted
wrong, run through the CLI with random weights (all CI has); the flips must rank at the top of
`embedlake query label_issues`, and the report must show the Labels section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PHOTOS, cli_here, jpeg_bytes, photo, run_cli

pytestmark = pytest.mark.e2e

FAMILIES = {
    "red": (1.0, 0.25, 0.2),
    "green": (0.2, 0.9, 0.25),
    "blue": (0.2, 0.3, 1.0),
    "yellow": (1.0, 0.9, 0.15),
}
FLIPS_PER_FAMILY = 2


def make_labelled_collection(root: Path, per_family: int = 30) -> set[str]:
    """`per_family` tinted photo crops per colour family under root/images, a sidecar
    root/labels.csv (label = family, split = train/test) with FLIPS_PER_FAMILY labels per family
    planted wrong (the next family's name); returns the flipped paths."""
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    sources = [photo(name).convert("L") for name in PHOTOS]
    rng = np.random.default_rng(7)
    names = list(FAMILIES)
    rows, flipped = [], set()
    for f, (family, tint) in enumerate(FAMILIES.items()):
        for i in range(per_family):
            gray = sources[i % len(sources)]
            x, y = rng.integers(0, gray.width // 3), rng.integers(0, gray.height // 3)
            crop = gray.crop((x, y, x + gray.width // 2, y + gray.height // 2)).resize((96, 96))
            level = np.asarray(crop, np.float32)[..., None] / 255
            pixels = level * np.array(tint, np.float32) * 255 + rng.normal(0, 8, (96, 96, 3))
            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            path = f"{family}/{family}_{i:03d}.jpg"
            (images / family).mkdir(exist_ok=True)
            (images / path).write_bytes(jpeg_bytes(img, quality=88))
            label = family
            if i % (per_family // FLIPS_PER_FAMILY) == 1:
                label = names[(f + 1) % len(names)]
                flipped.add(path)
            rows.append((path, label, "test" if rng.random() < 0.2 else "train"))
    (root / "labels.csv").write_text(
        "path,label,split\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows)
    )
    return flipped


@pytest.fixture(scope="module")
def labelled_lake(tmp_path_factory, session_env):
    root = tmp_path_factory.mktemp("labels")
    flipped = make_labelled_collection(root, per_family=40)
    env = session_env
    lake = root / "lake"
    done = run_cli(
        *("run", str(root / "images"), "--lake", str(lake), "--metadata", str(root / "labels.csv")),
        *("--label-column", "label", "--weights", "random", "--precision", "fp32"),
        *("--backbone", "mobilenet_v1_0.25_128", "--backbone", "xception"),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return lake, env, flipped


def _query(lake: Path, env: dict, *args: str) -> list[dict]:
    done = run_cli("query", *args, "--lake", str(lake), "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.heavy  # labelled_lake: 160 images through xception (a minute)
def test_planted_flips_rank_first_in_label_issues(labelled_lake):
    lake, env, flipped = labelled_lake
    rows = _query(lake, env, "label_issues", "--param", "limit=16")
    lowest = {
        b: {r["path"] for r in rows if r["backbone"] == b} for b in {r["backbone"] for r in rows}
    }
    # measured: xception ranks all 8 flips among its 8 lowest, mobilenet_v1_0.25_128 4 of 8
    assert lowest["xception"] >= flipped, sorted(lowest["xception"] - flipped)


@pytest.mark.heavy  # labelled_lake: 160 images through xception (a minute)
def test_probes_fill_all_three_views(labelled_lake):
    lake, env, _ = labelled_lake
    sql = (
        "SELECT backbone, n_images, n_classes, accuracy, chance, knn_accuracy, ms_per_image, macs "
        "FROM probes WHERE \"column\" = 'label' ORDER BY backbone"
    )
    done = run_cli("sql", sql, "--lake", str(lake), "--format", "json", env=env)
    probes = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["backbone"] for p in probes] == ["mobilenet_v1_0.25_128", "xception"]
    for p in probes:
        assert (p["n_images"], p["n_classes"], p["chance"]) == (160, 4, 0.25)
        assert p["accuracy"] > p["chance"] and p["ms_per_image"] > 0 and p["macs"] > 0
    for view in ("predictions", "label_issues"):
        done = run_cli("sql", f"SELECT count(*) AS n FROM {view}", "--lake", str(lake),
                       "--format", "json", env=env)  # fmt: skip
        assert json.loads(done.stdout)["n"] == 320, view


@pytest.mark.heavy  # labelled_lake: 160 images through xception (a minute)
def test_report_shows_the_labels_section(labelled_lake):
    lake, _, flipped = labelled_lake
    page = (lake / "reports" / "latest" / "index.html").read_text()
    section = page[page.index("<h2>Labels: label</h2>") :].split("</section>")[0]
    for heading in ("Confusion matrices", "Most likely wrong labels", "Accuracy against cost"):
        assert heading in section, heading
    assert "<h2>Label structure</h2>" in page
    assert "thumbnail unavailable" not in section
    assert sum(path in section for path in flipped) >= 6  # the gallery shows the flips


def test_a_missing_label_column_fails_before_embedding(tmp_path, prefect_api):
    make_labelled_collection(tmp_path, per_family=2)
    done = cli_here(  # in this process: the run stops after reading the sidecar
        *("run", str(tmp_path / "images"), "--lake", str(tmp_path / "lake")),
        *("--metadata", str(tmp_path / "labels.csv"), "--label-column", "specie"),
        *("--weights", "random", "--backbone", "mobilenet_v1_0.25_128"),
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("embedlake: error: --label-column specie: no such column")
    ), done.stderr
    assert not list((tmp_path / "lake" / "embeddings").glob("2*.parquet"))
