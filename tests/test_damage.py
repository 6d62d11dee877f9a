"""Damage at rest (issue 8): the damage kinds of ``harness.faults.corruption``, how they shrink,
and the ``damage`` row on stores that break the promise (``tests/defects_damage.py``)."""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import find, settings

from crashgate.backends import Capability, DamagePromise, Declaration, Durability
from crashgate.harness.cli import main
from crashgate.harness.faults import (
    BitFlip,
    Corruption,
    MisdirectedSector,
    OverwrittenSector,
    StaleSector,
    Truncation,
    compose,
    damage_strategy,
)
from crashgate.harness.faults.corruption import stale_sectors
from crashgate.harness.simdisk import SECTOR_SIZE, DiskImage, SimDisk
from crashgate.scenarios.procedures_damage import _same_files

TESTS = Path(__file__).parent
A = bytes(range(256)) * 5            # 1280 bytes: sectors 0, 1 and a partial sector 2
B = bytes(reversed(A))[:700]         # 700 bytes: sectors 0 and a partial sector 1
IMAGE = DiskImage({"/s/a": A, "/s/b": B})


def _changed(before: bytes, after: bytes) -> list[int]:
    assert len(before) == len(after)
    return [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y]


# -- each kind changes exactly what it says ------------------------------------------------


def test_a_bit_flip_changes_one_bit() -> None:
    out = BitFlip("/s/a", 300, 5).apply(IMAGE)
    assert _changed(A, out.files["/s/a"]) == [300]
    assert out.files["/s/a"][300] ^ A[300] == 1 << 5
    assert out.files["/s/b"] == B
    assert BitFlip("/s/a", 300, 5).describe() == "bit 5 of byte 300 of /s/a flipped"


def test_an_overwritten_sector_changes_that_sector_only() -> None:
    out = OverwrittenSector("/s/a", 1, seed=7).apply(IMAGE).files["/s/a"]
    assert set(_changed(A, out)) <= set(range(SECTOR_SIZE, 2 * SECTOR_SIZE))
    assert len(_changed(A, out)) > SECTOR_SIZE // 2
    # the last, partial sector stays partial: no damage but truncation changes a length
    last = OverwrittenSector("/s/b", 1, seed=7).apply(IMAGE).files["/s/b"]
    assert len(last) == len(B) and last[:SECTOR_SIZE] == B[:SECTOR_SIZE]


def test_a_stale_sector_is_the_earlier_image_of_that_sector() -> None:
    old = DiskImage({"/s/a": bytes(2 * SECTOR_SIZE) + b"old tail"})
    out = StaleSector("/s/a", 1, version=0).apply(IMAGE, [old]).files["/s/a"]
    assert out[SECTOR_SIZE:2 * SECTOR_SIZE] == bytes(SECTOR_SIZE)
    assert out[:SECTOR_SIZE] == A[:SECTOR_SIZE] and out[2 * SECTOR_SIZE:] == A[2 * SECTOR_SIZE:]
    # past the earlier file's end the sector reads zeros; the file keeps its length
    tail = StaleSector("/s/a", 2, version=0).apply(IMAGE, [old]).files["/s/a"]
    assert tail[2 * SECTOR_SIZE:] == b"old tail" + bytes(len(A) - 2 * SECTOR_SIZE - 8)
    with pytest.raises(ValueError, match="version=1 but 1 earlier images"):
        StaleSector("/s/a", 1, version=1).apply(IMAGE, [old])


def test_stale_sectors_lists_only_sectors_that_differ_once_each() -> None:
    old = DiskImage({"/s/a": A[:SECTOR_SIZE] + bytes(SECTOR_SIZE), "/s/b": B})
    listed = stale_sectors(IMAGE, [old, old])
    assert listed == [StaleSector("/s/a", 1, 0), StaleSector("/s/a", 2, 0)]


def test_a_misdirected_sector_lands_at_the_other_place_only() -> None:
    same = MisdirectedSector("/s/a", 0, "/s/a", 1).apply(IMAGE).files["/s/a"]
    assert same[SECTOR_SIZE:2 * SECTOR_SIZE] == A[:SECTOR_SIZE]
    assert same[:SECTOR_SIZE] == A[:SECTOR_SIZE] and same[2 * SECTOR_SIZE:] == A[2 * SECTOR_SIZE:]
    other = MisdirectedSector("/s/a", 2, "/s/b", 0).apply(IMAGE)
    assert other.files["/s/a"] == A   # its own place keeps what it had
    partial = A[2 * SECTOR_SIZE:]
    assert other.files["/s/b"][:SECTOR_SIZE] == partial + bytes(SECTOR_SIZE - len(partial))
    assert other.files["/s/b"][SECTOR_SIZE:] == B[SECTOR_SIZE:]


def test_a_truncation_cuts_the_file() -> None:
    assert Truncation("/s/b", 10).apply(IMAGE).files["/s/b"] == B[:10]
    with pytest.raises(ValueError, match="size=700 does not shorten /s/b"):
        Truncation("/s/b", 700).apply(IMAGE)


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"path='/s/c' is not a file.*'/s/a', '/s/b'"):
        BitFlip("/s/c", 0).apply(IMAGE)
    with pytest.raises(ValueError, match="sector=3 is outside /s/a .*sectors 0..2"):
        OverwrittenSector("/s/a", 3).apply(IMAGE)
    with pytest.raises(ValueError, match="kinds=.*'bit-flip'"):
        damage_strategy(IMAGE, kinds=["bitflip"])
    with pytest.raises(ValueError, match="no non-empty file"):
        damage_strategy(DiskImage({"/s/a": b""}))


# -- the strategy shrinks toward a simple damage --------------------------------------------


def _shrunk(condition: Any, past: list[DiskImage] | None = None) -> Any:
    return find(damage_strategy(IMAGE, past or []), condition, random=random.Random(0),
                settings=settings(database=None, max_examples=500))


def test_shrinks_toward_one_bit_flip_in_the_first_file_at_offset_zero() -> None:
    assert _shrunk(lambda d: d.apply(IMAGE) != IMAGE) == BitFlip("/s/a", 0, 0)


def test_shrinks_toward_the_lowest_offset_that_still_fails() -> None:
    def late_in_b(d: Any) -> bool:
        out = d.apply(IMAGE)
        b = out.files["/s/b"]
        return out.files["/s/a"] == A and b != B and b[:600] == B[:600]

    assert _shrunk(late_in_b) == BitFlip("/s/b", 600, 0)


# -- the fault object ----------------------------------------------------------------------


def test_the_fault_is_na_for_damage_none_and_claims_the_fs_lever() -> None:
    def decl(promise: DamagePromise) -> Declaration:
        return Declaration(Durability.POWER_LOSS, frozenset({Capability.KV}), damage=promise)

    fault = Corruption()
    assert fault.needs(decl(DamagePromise.DETECTED)) is None
    assert fault.needs(decl(DamagePromise.ROLLBACK)) is None
    assert "damage=none" in (fault.needs(decl(DamagePromise.NONE)) or "")
    fault.apply(IMAGE, BitFlip("/s/a", 1))
    assert fault.fired == ("bit 0 of byte 1 of /s/a flipped",)
    from crashgate.harness.faults import IOErrors
    with pytest.raises(ValueError, match="'fs' lever"):
        compose(fault, IOErrors("EIO", at=1))


def test_a_lost_write_never_reverts_a_file_to_one_renamed_away() -> None:
    """Written as tmp then renamed over the old name, the new file's sectors were never the
    old file's: before it was created it held nothing."""
    disk = SimDisk(DiskImage.empty("/d"))
    fs = disk.fs()
    for n, text in enumerate([b"first version", b"second version"]):
        f = fs.open(f"/d/f.tmp{n}", "x")
        f.write(0, text)
        f.close()
        fs.rename(f"/d/f.tmp{n}", "/d/f")
        if n == 0:
            at, then = disk.position, disk.cache_image()
    image = disk.cache_image()
    assert image.files["/d/f"] == b"second version"
    assert then.files["/d/f"] == b"first version"    # by name: another file
    assert _same_files(image, disk.trace, at, then).files["/d/f"] == b""
    # a file written in place keeps its own history
    g = fs.open("/d/g", "x")
    g.write(0, b"in place 1")
    at, then = disk.position, disk.cache_image()
    g.write(0, b"in place 2")
    g.close()
    image = disk.cache_image()
    assert _same_files(image, disk.trace, at, then).files["/d/g"] == b"in place 1"


# -- the row -------------------------------------------------------------------------------


def _certify(tmp_path: Path, backend: str) -> dict[str, Any]:
    args = ["certify", backend, "--budget", "standard", "--seed", "42", "--out", str(tmp_path),
            "--quiet", "--scenario", "damage"]
    assert main(args) == 1
    [path] = tmp_path.glob("*/*/certificate.json")
    return {r["key"]: r for r in json.loads(path.read_text())["rows"]}["damage"]


def _run_elsewhere(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A printed reproduction run from a clean shell in another directory, with only the
    test backends' directory on the import path (as a user with the backend installed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(TESTS)
    argv = shlex.split(command)
    while argv and "=" in argv[0]:
        name, _, value = argv.pop(0).partition("=")
        env[name] = value
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "crashgate":
        argv = [sys.executable, "-m", "crashgate.harness.cli", *argv[1:]]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("backend", "finding"), [
    ("defects_damage:open_unchecked", ("torn or garbage", "never written", "altered")),
    ("defects_damage:open_untyped", ("JSONDecodeError", "KeyError", "UnicodeDecodeError",
                                     "TypeError", "ValueError")),
])
def test_a_store_breaking_the_promise_fails_with_a_shrunk_reproduction(
        tmp_path: Path, capsys: Any, backend: str, finding: tuple[str, ...]) -> None:
    row = _certify(tmp_path / "out", backend)
    capsys.readouterr()
    assert row["verdict"] == "fail", row
    assert any(f in row["summary"] for f in finding), row["summary"]
    assert row["measured"]["damages"] >= 1
    assert row["reproduce"], row
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = _run_elsewhere(row["reproduce"], elsewhere)
    assert again.returncode == 1, again.stdout + again.stderr
    assert again.stdout.startswith("fail:"), again.stdout
