"""Atomic writes: all or nothing, with the permissions a plain open() would give."""

import os
import stat

import pytest

from vild_d2.utils.atomic_io import atomic_write, atomic_write_json


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_respect_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        path = tmp_path / "results.json"
        atomic_write_json(str(path), {"a": 1})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected == stat.S_IMODE(plain.stat().st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.bin"]


def test_atomic_folder_never_replaces_a_file(tmp_path):
    from vild_d2.utils.atomic_io import atomic_folder

    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        atomic_folder(str(target), lambda folder: None)
    assert target.read_text() == "mine" and os.listdir(tmp_path) == ["notes.txt"]
