from __future__ import annotations

import pytest

from crashgate.backends import OsFS


def test_positional_io_and_modes(tmp_path) -> None:
    fs = OsFS()
    p = str(tmp_path / "f")
    with pytest.raises(FileNotFoundError):
        fs.open(p, "r")
    f = fs.open(p, "x")
    f.write(0, b"hello")
    f.write(10, b"!")
    assert f.size() == 11
    assert f.read(0, 100) == b"hello\0\0\0\0\0!"
    f.sync()
    f.truncate(5)
    f.close()
    with pytest.raises(FileExistsError):
        fs.open(p, "x")
    assert fs.open(p, "r").read(0, 10) == b"hello"
    fs.rename(p, p + "2")
    fs.sync_dir(str(tmp_path))
    assert fs.listdir(str(tmp_path)) == ["f2"]
    assert fs.native_path(p) == p
    with pytest.raises(ValueError):
        fs.open(p, "rw")  # type: ignore[arg-type]
