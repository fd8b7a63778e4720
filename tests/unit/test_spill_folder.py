"""DuckDB's spill folder is ours alone: the shared name is used only when it is a private folder
of ours, else each process makes its own."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from embedlake.tasks import catalog, lake


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _private(folder) -> bool:
    found = os.lstat(folder)
    return (
        stat.S_ISDIR(found.st_mode)
        and found.st_uid == os.getuid()
        and stat.S_IMODE(found.st_mode) == 0o700
    )


def test_a_new_spill_folder_is_private_and_reused(tmp_root):
    first = catalog._spill_folder()
    assert first == tmp_root / f"embedlake-spill-{os.getuid()}" and _private(first)
    assert catalog._spill_folder() == first


@pytest.mark.parametrize("planted", ["open to all", "a link", "another user's"])
def test_a_spill_folder_planted_by_someone_else_is_not_used(tmp_root, planted):
    shared = tmp_root / f"embedlake-spill-{os.getuid()}"
    if planted == "open to all":
        shared.mkdir()
        shared.chmod(0o777)
    elif planted == "a link":
        (tmp_root / "elsewhere").mkdir(mode=0o700)
        shared.symlink_to(tmp_root / "elsewhere")
    else:
        if os.getuid() != 0:
            pytest.skip("only root can give a folder to another user")
        shared.mkdir(mode=0o700)
        os.chown(shared, 65534, 65534)
    catalog._private_spill_folder.cache_clear()
    used = catalog._spill_folder()
    assert used != shared and not used.is_symlink() and _private(used)
    assert used.parent == tmp_root  # a fresh name beside it (tempfile.mkdtemp)


def test_read_connections_spill_to_the_private_folder(tmp_root, tmp_path):
    root = lake.ensure_lake(tmp_path / "lake")
    catalog.build_catalog(root)
    shared = tmp_root / f"embedlake-spill-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    catalog._private_spill_folder.cache_clear()
    with catalog.connect_read_only(root) as con:
        (used,) = con.execute("SELECT current_setting('temp_directory')").fetchone()
    assert used != str(shared) and _private(used)
