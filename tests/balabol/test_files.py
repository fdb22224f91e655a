"""balabol/files.py: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os

import pytest

from balabol.files import open_temp, replacing, replacing_dir, sha256_file, write_text


def test_write_text_replaces_and_leaves_no_temp(tmp_path):
    path = write_text(tmp_path / "sub" / "a.json", "new\n")
    assert path.read_text() == "new\n"
    assert os.listdir(path.parent) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), replacing(path) as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_temp_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        f, path = open_temp(tmp_path, "x")
        f.close()
    finally:
        os.umask(umask)
    assert path.name.startswith(".x.") and path.name.endswith(".tmp")
    assert path.stat().st_mode & 0o777 == 0o644


def test_replacing_dir_swaps_in_a_complete_directory_only(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old").write_text("1")
    with pytest.raises(KeyboardInterrupt), replacing_dir(out) as tmp:
        (tmp / "new").write_text("2")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["model"] and os.listdir(out) == ["old"]
    with replacing_dir(out) as tmp:
        (tmp / "new").write_text("2")
    assert os.listdir(tmp_path) == ["model"] and os.listdir(out) == ["new"]


def test_sha256_file(tmp_path):
    data = os.urandom(3 << 20)  # more than one chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
