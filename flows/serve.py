"""`embedlake serve`: the run flow as a Prefect deployment on a schedule, supervised.

Against the configured Prefect API (`PREFECT_API_URL`) when there is one. Otherwise a local
`prefect server start` is started here (Prefect's temporary server has no scheduler: it warns
"Cannot schedule flows on an ephemeral server" and nothing runs), with one PREFECT_HOME per lake
in embedlake's cache (never inside the lake, where `embedlake sql` could read its database), on a
free port, health-checked before serving. Scheduled runs of one deployment never overlap (a
deployment concurrency limit of 1; the lake lock guards the rest).

The local server answers only with Prefect's own API authentication (basic auth,
`PREFECT_SERVER_API_AUTH_STRING`): a fresh secret per start, written to `HOME/api-auth` (mode
0600) and handed to the runner and its flow runs as `PREFECT_API_AUTH_STRING`, so another local
user cannot start runs with parameters of their own; the UI asks for that string. A configured
`PREFECT_API_URL` is the user's own server, secured (or not) as they set it up.

This process only supervises: Prefect's runner (`flow.serve`) runs in a child process, and the
server in another, each in its own session so that a terminal's Ctrl-C reaches only this one.
On SIGINT or SIGTERM, whatever is happening (the server starting, a flow run starting or running),
serve is gone within `STOP_SECONDS`, and so is every process it started:
- a flow run in progress is killed (SIGKILL, with its decode workers). Its lake keeps the parts it
  had renamed into place; the next run finds it unfinished, marks it 'aborted' and redoes the rest
  of its work exactly once, as after any kill;
- the runner gets SIGTERM, so it can report that run crashed and pause the schedule, and SIGKILL
  (its whole process group) if it has not exited in time;
- the server gets SIGTERM, then SIGKILL of its whole process group.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

from embedlake.tasks.lake import Lake, cache_root
from embedlake.tasks.params import RunParams

__all__ = ["LocalPrefectServer", "prefect_home", "serve"]

# from the signal to serve's exit, everything it started included (the promise is 10 s)
STOP_SECONDS = 6.0
# of which the runner may take this much to report an interrupted run and pause its schedule
RUNNER_STOP_SECONDS = 3.0


def prefect_home(lake: str) -> Path:
    """The local Prefect server's home for `lake`: one per lake, in embedlake's cache."""
    url = Lake.at(lake).url
    home = cache_root() / "prefect" / hashlib.sha256(url.encode()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    (home / "lake.txt").write_text(url + "\n")  # which lake this home serves, for a reader
    return home


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, waiting for its parent to reap it
    except psutil.NoSuchProcess:
        return True


def _kill(processes: Iterable[psutil.Process], wait: float = 1.0) -> None:
    """SIGKILL each process still running and wait (briefly) until each is dead."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()  # psutil checks the pid was not reused since it was listed
    deadline = time.monotonic() + wait
    while not all(_gone(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.02)


def _tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _end_session(process: subprocess.Popen, deadline: float) -> None:
    """SIGTERM a process that leads its own session, wait until `deadline`, then SIGKILL its
    process group and every descendant seen (one that left the group included)."""
    seen = set(_tree(process.pid))
    if process.poll() is None:
        process.terminate()
    while process.poll() is None and time.monotonic() < deadline:
        seen.update(_tree(process.pid))
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # an empty group
        os.killpg(process.pid, signal.SIGKILL)
    _kill(seen)
    process.wait()


class LocalPrefectServer:
    """A `prefect server start` subprocess on 127.0.0.1 and a free port, in its own session.

    As a context manager it starts (health-checked) and stops; `serve` calls `start` and `stop`
    itself, to give up on a start when it is told to stop.
    """

    def __init__(self, home: Path, startup_timeout: float = 90.0):
        self.home = home
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.auth_string = ""

    def __enter__(self) -> LocalPrefectServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Start the server and wait until it answers; False when `cancelled()` came first."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.home.mkdir(parents=True, exist_ok=True)
        self.auth_string = f"embedlake:{secrets.token_urlsafe(24)}"
        auth_file = self.home / "api-auth"
        auth_file.unlink(missing_ok=True)  # created anew: never a file someone else opened
        fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.auth_string + "\n")
        env = dict(os.environ, PREFECT_HOME=str(self.home))
        env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.pop("PREFECT_API_URL", None)
        log = self.home / "server.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals, not the terminal's, stop it
            )
        self.url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + self.startup_timeout
        while not cancelled():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with {self.process.returncode}; see {log}"
                )
            try:
                # a short timeout: a stop request waits at most this long
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not answer in {self.startup_timeout:.0f} s")
            time.sleep(0.25)
        return False

    def stop(self, deadline: float | None = None) -> None:
        """SIGTERM, wait (until `deadline`, default 3 s from now), then SIGKILL the group."""
        if self.process is not None:
            _end_session(self.process, deadline or time.monotonic() + 3)


class _StopSignals:
    """SIGINT and SIGTERM set a flag (nothing is raised mid-step); the old handlers come back."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None

    def __enter__(self) -> _StopSignals:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum

    def __call__(self) -> bool:
        return self.received is not None


def _start_runner(api_url: str, spec: dict, auth_string: str | None) -> subprocess.Popen:
    """Prefect's runner for the deployment, in a child process leading its own session (its
    flow runs inherit the API's address and credentials)."""
    env = dict(os.environ, PREFECT_API_URL=api_url)
    if auth_string:
        env["PREFECT_API_AUTH_STRING"] = auth_string
    return subprocess.Popen(
        [sys.executable, "-m", "embedlake.flows.serve", json.dumps(spec)],
        env=env,
        start_new_session=True,
    )


def _flow_runs(runner: subprocess.Popen) -> list[psutil.Process]:
    """The runner's flow-run processes and theirs (its own multiprocessing resource tracker is
    left to the end: killed earlier, the runner would warn that it died and start another)."""
    tree = _tree(runner.pid)[1:]
    helpers = []
    for process in tree:
        with contextlib.suppress(psutil.Error):
            if process.ppid() == runner.pid and "resource_tracker" in " ".join(process.cmdline()):
                helpers.append(process)
    return [p for p in tree if p not in helpers]


def _stop_runner(runner: subprocess.Popen, deadline: float) -> None:
    # the flow run and its workers first, so the runner sees it end and reports it
    _kill(_flow_runs(runner))
    runner.terminate()  # Prefect's runner: stop polling, pause the schedule, exit
    while runner.poll() is None and time.monotonic() < deadline:
        _kill(_flow_runs(runner))  # a run it started meanwhile
        time.sleep(0.1)
    _end_session(runner, deadline)


def serve(params: RunParams, *, cron: str | None, interval: float | None, name: str) -> None:
    """Serve the run flow on a schedule until SIGINT or SIGTERM; then stop within STOP_SECONDS,
    killing a flow run in progress (the next run marks it aborted and redoes its work)."""
    with _StopSignals() as stop:
        from prefect.settings import PREFECT_API_URL

        server = runner = None
        try:
            api_url = PREFECT_API_URL.value()
            if not api_url:
                home = prefect_home(params.lake)
                print(
                    f"embedlake: no PREFECT_API_URL; starting a local Prefect server (home {home})",
                    flush=True,
                )
                server = LocalPrefectServer(home)
                if not server.start(cancelled=stop):
                    return
                api_url = server.url
                print(
                    f"embedlake: Prefect UI at {api_url.removesuffix('/api')} "
                    f"(its login: the line in {home / 'api-auth'})",
                    flush=True,
                )
            if stop():
                return
            print(
                f"embedlake: serving '{name}' against {api_url} "
                f"({'cron ' + cron if cron else f'every {interval:g} s'}); Ctrl-C stops",
                flush=True,
            )
            spec = {"params": params.model_dump(), "cron": cron, "interval": interval, "name": name}
            runner = _start_runner(api_url, spec, server.auth_string if server else None)
            while not stop():
                if runner.poll() is not None:
                    raise RuntimeError(f"Prefect's runner exited with {runner.returncode}")
                time.sleep(0.2)
        finally:
            started = time.monotonic()
            if stop():
                print("embedlake: stopping", flush=True)
            if runner is not None:
                _stop_runner(runner, started + RUNNER_STOP_SECONDS)
            if server is not None:
                server.stop(min(started + STOP_SECONDS, time.monotonic() + 2))


def _serve_flow(spec: dict) -> None:
    """The runner child: Prefect's `flow.serve` for the deployment `spec` describes."""
    from prefect.types.entrypoint import EntrypointType

    from embedlake.flows.pipeline import embed_collection

    embed_collection.serve(
        name=spec["name"],
        cron=spec["cron"],
        interval=spec["interval"],
        parameters={"params": spec["params"]},
        global_limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_starting_message=False,
    )


if __name__ == "__main__":
    _serve_flow(json.loads(sys.argv[1]))
