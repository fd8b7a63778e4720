"""`embedlake demo` as a new user runs it, on a machine whose model caches hold no weights."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_model_caches_are_the_sessions_own():
    # a machine whose HF or torch cache holds the pretrained weights must test as any other
    import huggingface_hub.constants
    import torch.hub

    for variable, folder in [
        ("HF_HOME", huggingface_hub.constants.HF_HUB_CACHE),
        ("TORCH_HOME", torch.hub.get_dir()),
    ]:
        home = Path(os.environ.get(variable, "(unset)"))
        assert home.is_relative_to(tempfile.gettempdir()), (variable, home)
        assert Path(folder).is_relative_to(home), (variable, folder)


# what each optional extra's packages are imported as; an extra not named here fails the test
EXTRA_MODULES = {
    "faiss-cpu": ["faiss"],
    "ray": ["ray"],
    "prefect-ray": ["prefect_ray"],
    "s3fs": ["s3fs"],
    "psutil": [],  # a base dependency too (serve)
    "threadpoolctl": [],  # in the base install too: scikit-learn's (openTSNE's) dependency
}


def without_extras(folder: Path) -> str:
    """A PYTHONPATH entry under which every optional extra's modules are missing, as in the base
    install: each is a package that raises ModuleNotFoundError on import (subprocesses too)."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    names = {
        re.split(r"[\[<>=!~; ]", spec)[0] for k, v in extras.items() if k != "test" for spec in v
    }
    for module in sorted({m for name in names for m in EXTRA_MODULES[name]}):
        (folder / module).mkdir(parents=True)
        (folder / module / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
        )
    return str(folder)


@pytest.mark.heavy  # the whole demo in a fresh process (.ci/run's `make demo` runs it too)
def test_demo_in_the_base_install_falls_back_to_random_weights_and_says_so(cli_env, tmp_path):
    # the README's first command, as a newcomer runs it: no optional extra installed (the test
    # extras install faiss, ray and s3fs; here they cannot be imported)
    env = dict(cli_env, XDG_CACHE_HOME=str(tmp_path / "cache"))  # the sample collection's home
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [without_extras(tmp_path / "no-extras"), env.get("PYTHONPATH")])
    )
    lake = tmp_path / "lake"
    done = run_cli(
        "demo",
        "--lake",
        str(lake),
        "--backbone",
        "mobilenet_v1_0.25_128",  # the smallest: the demo's pipeline, not its models, is tested
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    banner = done.stderr.split("!" * 78)
    assert len(banner) == 3 and "RANDOM WEIGHTS" in banner[1], done.stderr
    assert "ImageNet weights could not be loaded" in banner[1]
    assert f"lake {lake}" in done.stdout and "try:" in done.stdout
    assert f"embedlake explore --lake {lake}" in done.stdout  # the way to the explorer
    report = (lake / "reports" / "latest" / "index.html").read_text()
    assert '<p class="banner">RANDOM WEIGHTS' in report
    assert list((tmp_path / "cache" / "embedlake").glob("sample-v*/metadata.csv"))
