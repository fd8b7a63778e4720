"""The deployment `prefect.yaml` offers teams, end to end: deployed to a local Prefect server, run
once by a process worker (which runs flows in a temporary folder), found in the lake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from embedlake.flows.serve import LocalPrefectServer

# heavy: a Prefect server, `prefect deploy` and a process worker running the flow (about a minute)
pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[2]


def _prefect(*args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_prefect_yaml_deployment_runs_on_a_process_worker(collection, tmp_path):
    source, meta = collection
    lake = tmp_path / "lake"
    worker_dir = tmp_path / "worker"  # neither the project nor the lake
    worker_dir.mkdir()
    params = {
        "params": {
            "source": str(source),
            "lake": str(lake),
            "metadata": str(meta),
            "weights": "random",
            "backbones": ["mobilenet_v1_0.25_128"],
        }
    }
    with LocalPrefectServer(tmp_path / "server-home") as server:
        # the server answers only with its API secret, as a user's CLI and worker would send it
        env = dict(
            os.environ, PREFECT_API_URL=server.url, PREFECT_API_AUTH_STRING=server.auth_string
        )
        env["PREFECT_HOME"] = str(tmp_path / "client-home")
        env.pop("EMBEDLAKE_LAKE", None)
        _prefect("work-pool", "create", "embedlake-pool", "--type", "process", env=env, cwd=REPO)
        # as the README says: `prefect deploy` in the project folder, here one deployment of it
        # with the parameters overridden to a small collection
        _prefect(
            "--no-prompt",
            "deploy",
            "--name",
            "nightly",
            "--params",
            json.dumps(params),
            env=env,
            cwd=REPO,
        )
        _prefect("deployment", "run", "embedlake-run/nightly", env=env, cwd=REPO)
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start"]
            + ["--pool", "embedlake-pool", "--run-once"],
            env=env,
            cwd=worker_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its flow run with it, when it must be killed
        )
        try:
            output, _ = worker.communicate(timeout=600)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    assert worker.returncode == 0, output
    assert list((lake / "runs").glob("*-1-finished.parquet")), output
    assert "FileNotFoundError" not in output
