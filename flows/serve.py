"""`embedlake serve`: the run flow as a Prefect deployment on a schedule.

Against the configured Prefect API (`PREFECT_API_URL`) when there is one. Otherwise a local
`prefect server start` is started here (Prefect's temporary server has no scheduler: it warns
"Cannot schedule flows on an ephemeral server" and nothing runs), with its own PREFECT_HOME under
the lake, on a free port, health-checked before serving, and stopped on exit. Scheduled runs of
one deployment never overlap (a deployment concurrency limit of 1; the lake lock guards the rest).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from embedlake.tasks.lake import Lake
from embedlake.tasks.params import RunParams

__all__ = ["LocalPrefectServer", "serve"]


class LocalPrefectServer:
    """A `prefect server start` subprocess on 127.0.0.1 and a free port."""

    def __init__(self, home: Path, startup_timeout: float = 90.0):
        self.home = home
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> LocalPrefectServer:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PREFECT_HOME=str(self.home))
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.pop("PREFECT_API_URL", None)
        log = (self.home / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with {self.process.returncode}; see {log.name}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"prefect server did not answer in {self.startup_timeout:.0f} s")
            time.sleep(0.5)

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM ends serving like Ctrl-C, so a local server started here is stopped too
    raise KeyboardInterrupt


def serve(params: RunParams, *, cron: str | None, interval: float | None, name: str) -> None:
    """Serve the run flow on a schedule until interrupted (Ctrl-C or SIGTERM)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.types.entrypoint import EntrypointType

    from embedlake.flows.pipeline import embed_collection

    def run_served(api_url: str) -> None:
        print(
            f"embedlake: serving '{name}' against {api_url} "
            f"({'cron ' + cron if cron else f'every {interval:g} s'}); Ctrl-C stops",
            flush=True,
        )
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            embed_collection.serve(
                name=name,
                cron=cron,
                interval=interval,
                parameters={"params": params.model_dump()},
                global_limit=1,
                entrypoint_type=EntrypointType.MODULE_PATH,
                print_starting_message=False,
            )

    signal.signal(signal.SIGTERM, _interrupt)
    configured = PREFECT_API_URL.value()
    if configured:
        run_served(configured)
        return
    home = Lake.at(params.lake).local_dir / ".prefect"
    print(
        f"embedlake: no PREFECT_API_URL; starting a local Prefect server (home {home})", flush=True
    )
    with LocalPrefectServer(home) as server:
        print(f"embedlake: Prefect UI at {server.url.removesuffix('/api')}", flush=True)
        try:
            run_served(server.url)
        except KeyboardInterrupt:
            print("embedlake: stopping", flush=True)
