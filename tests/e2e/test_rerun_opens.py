"""A rerun costs what changed, down to the files it opens: under strace, a rerun of a collection
opens no file that did not change (its report's thumbnails come from the lake), and the one file
that changed is the only one opened."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, make_distinct_photos

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]  # two runs in subprocesses, traced (~60 s)

_STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(
    _STRACE is None and not os.environ.get("CI_REQUIRE_CHROMIUM"),
    reason="strace not installed (.ci/run installs it with chromium)",
)
_OPEN = re.compile(r'open(?:at)?\((?:AT_FDCWD|\d+), "([^"]+)", ([A-Z_|]+)')


def _traced_run(source: Path, lake: Path, env: dict[str, str], log: Path) -> set[str]:
    """`embedlake run` under strace -f; the files under SOURCE it opened (directories, which
    listing opens, are left out), relative to SOURCE."""
    assert _STRACE, "CI_REQUIRE_CHROMIUM is set (CI) but strace is missing"
    command = [_STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=open,openat", "-o", str(log)]
    command += [*CLI, "run", str(source), "--lake", str(lake), "--weights", "random"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    opened = set()
    root = str(source) + os.sep
    for line in log.read_text(errors="replace").splitlines():
        found = _OPEN.search(line)
        not_a_file = found is None or "O_DIRECTORY" in found[2] or "ENOENT" in line
        if not not_a_file and found[1].startswith(root):
            opened.add(found[1][len(root) :])
    return opened


@needs_strace
def test_a_rerun_opens_only_the_files_that_changed(session_env, tmp_path):
    source, lake = tmp_path / "photos", tmp_path / "lake"
    photos = make_distinct_photos(source, 6)
    first = _traced_run(source, lake, session_env, tmp_path / "first.strace")
    assert first >= {p.name for p in photos}  # the first run reads every image
    changed = photos[0]
    changed.write_bytes(photos[1].read_bytes() + b"\0")  # new bytes (and size): a changed file
    again = _traced_run(source, lake, session_env, tmp_path / "again.strace")
    assert again == {changed.name}
