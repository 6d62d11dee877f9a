"""The RVF wire-version gate: newer files are refused with ADR-032's upgrade hint and never
modified, older files are read, and damage is never confused with a newer version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crashgate.backends import CorruptStore, VectorRecord, VersionTooNew, os_env
from crashgate.reference.rvf import open_rvf
from crashgate.reference.rvf.segments import HEADER_SIZE


def write(path: Path, version: int, start: int = 0) -> None:
    with open_rvf(str(path), os_env(), wire_version=str(version)) as s:
        for i in range(start, start + 3):
            s.put(f"k{i}", bytes([i]))
            s.upsert([VectorRecord.of(i, [float(i), 1.0], {"v": version})])


def listing(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


def read(path: Path, version: int) -> tuple[object, ...]:
    with open_rvf(str(path), os_env(), wire_version=str(version), readonly="true") as s:
        return s.epoch, s.scan(), s.fetch(s.ids())


@pytest.mark.parametrize("readonly", ["false", "true"])
def test_a_newer_file_is_refused_with_the_upgrade_hint_and_left_alone(
        tmp_path: Path, readonly: str) -> None:
    path = tmp_path / "vectors.rvf"
    write(path, 2)
    before = listing(path)
    with pytest.raises(VersionTooNew) as err:
        open_rvf(str(path), os_env(), wire_version="1", readonly=readonly)
    assert (err.value.found, err.value.supported) == (2, 1)
    message = str(err.value)
    assert f"{path} requires RVF wire version 2, but this reader supports version 1" in message
    assert "Run: npm update @ruvector/rvf" in message
    assert listing(path) == before  # same bytes, and no lock file left behind


def test_an_older_file_is_read_by_a_newer_reader(tmp_path: Path) -> None:
    path = tmp_path / "v1.rvf"
    write(path, 1)
    assert read(path, 2) == read(path, 1)
    write(path, 2, start=10)  # a v2 writer appends v2 segments: the file is now v2
    epoch, kv, vectors = read(path, 2)
    assert epoch == 12 and len(kv) == 6 and len(vectors) == 6  # type: ignore[arg-type]
    with pytest.raises(VersionTooNew):
        read(path, 1)


def test_a_v1_file_is_refused_by_a_v0_reader(tmp_path: Path) -> None:
    path = tmp_path / "v1.rvf"
    write(path, 1)
    with pytest.raises(VersionTooNew, match="requires RVF wire version 1, but this reader "
                                            "supports version 0"):
        read(path, 0)


def first_vec_segment(path: Path) -> int:
    with open_rvf(str(path), os_env(), readonly="true", wire_version="255") as s:
        return next(x.offset for x in s.segments() if x.type_name == "VEC")


@pytest.mark.parametrize("where", ["magic", "version byte", "payload"])
def test_damage_in_a_v1_file_is_corrupt_for_every_reader(tmp_path: Path, where: str) -> None:
    path = tmp_path / "d.rvf"
    write(path, 1)
    seg = first_vec_segment(path)  # a committed data segment in the middle
    data = bytearray(path.read_bytes())
    at = {"magic": seg, "version byte": seg + 4, "payload": seg + HEADER_SIZE + 1}[where]
    data[at] = 2 if where == "version byte" else data[at] ^ 0x10  # 1 -> 2: looks newer
    path.write_bytes(bytes(data))
    for version in (1, 2):
        with pytest.raises(CorruptStore):
            read(path, version)


def test_a_damaged_newer_file_is_still_newer_for_an_old_reader(tmp_path: Path) -> None:
    path = tmp_path / "v2.rvf"
    write(path, 2)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # the first header is broken; intact v2 headers follow it
    path.write_bytes(bytes(data))
    with pytest.raises(VersionTooNew):
        read(path, 1)  # it cannot judge a v2 file, so it never calls it damaged
    with pytest.raises(CorruptStore):
        read(path, 2)  # the v2 reader can, and does


def test_a_torn_v2_commit_on_a_v1_file(tmp_path: Path) -> None:
    """A v2 writer's first commit torn at every byte. The rule: an intact v2 header is decisive
    (VersionTooNew, file untouched); a torn one claims nothing (the v1 state opens). Never
    CorruptStore, and a v2 reader always opens the v1 state."""
    path = tmp_path / "t.rvf"
    write(path, 1)
    v1_state, committed = read(path, 1), path.stat().st_size
    with open_rvf(str(path), os_env(), wire_version="2") as s:
        s.put("v2", b"torn")
    full = path.read_bytes()
    cut_path = tmp_path / "cut.rvf"
    for cut in range(committed, len(full), 7):
        cut_path.write_bytes(full[:cut])
        if cut - committed >= HEADER_SIZE:
            with pytest.raises(VersionTooNew):
                read(cut_path, 1)
            assert cut_path.read_bytes() == full[:cut]
        else:
            assert read(cut_path, 1) == v1_state
        assert read(cut_path, 2) == v1_state
    assert read(path, 2)[1] == [*v1_state[1], ("v2", b"torn")]  # type: ignore[misc]
    assert not os.path.exists(str(cut_path) + ".lock")
