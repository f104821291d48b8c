import os

import pytest

from zlora.utils.io import atomic_open, atomic_save_file, atomic_write_text


def test_atomic_write_replaces_only_on_success(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write("partial")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old\n"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"], "temp file left behind"


def test_disk_full_keeps_previous(tmp_path):
    p = tmp_path / "w.bin"
    atomic_write_text(p, "v1")

    def failing_save(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_save_file(failing_save, p)
    assert p.read_text() == "v1"
    assert sorted(os.listdir(tmp_path)) == ["w.bin"]


def test_atomic_files_respect_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert (os.stat(tmp_path / "a.txt").st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
