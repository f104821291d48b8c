import os

import pytest

from zlora.utils.io import atomic_open, atomic_save_file, atomic_write_text, table_fingerprint


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


def test_table_fingerprint_follows_the_files_a_table_names(tmp_path):
    ark, wav = tmp_path / "f.ark", tmp_path / "a.wav"
    ark.write_bytes(b"x" * 10)
    wav.write_bytes(b"RIFF")
    scp = tmp_path / "feats.scp"
    scp.write_text(f"u1 {ark}:3\nu2 {ark}:7\nu3 {wav}\nu4 sox in.flac -t wav - |\n")
    fp = table_fingerprint(scp, tmp_path / "segments")          # a missing table counts as empty
    assert fp == table_fingerprint(scp, tmp_path / "segments")
    ark.write_bytes(b"y" * 11)                                  # the ark behind "path:offset"
    assert table_fingerprint(scp, tmp_path / "segments") != fp
    fp = table_fingerprint(scp)
    os.utime(wav, ns=(1, 1))                                    # a plain path: same size, new mtime
    assert table_fingerprint(scp) != fp
    fp = table_fingerprint(scp)
    scp.write_text(scp.read_text().replace("-t wav", "-t  wav"))  # a pipe counts by its text
    assert table_fingerprint(scp) != fp


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_safetensors_outputs_respect_umask(tmp_path, umask):
    torch = pytest.importorskip("torch")
    from zlora.utils.io import save_tensors

    old = os.umask(umask)
    try:
        save_tensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "w.safetensors").st_mode & 0o777) == (os.stat(plain).st_mode & 0o777)
    assert sorted(os.listdir(tmp_path)) == ["plain", "w.safetensors"]
