"""Issue 10 item 5 on the stage adapters: ``backup``/``restore`` of a whole adapter (its stage,
the stores that stage uses and its divergence queue) as one container file, restored into
every store or none by a roll-forward from a committed pending restore
(``reference/stages/backup.py``); and ``crashgate certify stage0 stage2 stage4 --scenario
adr072-backup``."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import Backupable, Capability, CorruptStore, VectorRecord
from crashgate.harness.cli import main
from crashgate.harness.crashenum import enumerate_crash_states
from crashgate.harness.crashstates import CrashModel
from crashgate.harness.failpoints import ArmedFailpoints
from crashgate.harness.powerloss import POWER_MODELS
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.sqlite_store import open_sqlite
from crashgate.reference.stages import StageAdapter, open_stage, relational_data, roles
from crashgate.reference.stages.backup import MAGIC, PENDING
from crashgate.reference.stages.control import StageControl

PATH, DEST = "/data/stage", "/data/stage.bak"
MODELS = [CrashModel.PROCESS, *POWER_MODELS]
IDS = range(40)


def recs(first: int, n: int, tag: str) -> list[VectorRecord]:
    return [VectorRecord.of(i, [i * 0.5, 1.0, -i / 7], {"tag": tag}) for i in range(first,
                                                                                  first + n)]


def seen(store: StageAdapter) -> tuple[object, ...]:
    """What the adapter shows: stage, key-value data, vectors, relational data, queue."""
    return (store.stage, store.scan(""), store.fetch(IDS), relational_data(store),
            store.divergences())


def fill(store: StageAdapter, tag: str, failpoints: ArmedFailpoints) -> None:
    """Writes of every kind, and one divergence: a real failed shadow write in stage 2, a
    recorded one elsewhere (the queue is carried whatever the stage)."""
    store.write_batch({f"k{i:03d}": f"{tag}-{i}".encode() for i in range(30)}, ["k000"])
    store.upsert(recs(0, 12, tag))
    store.remove([3])
    store.q_value_update("s", f"a-{tag}", 0.25)
    store.q_value_update("s", "shared", 1.0)
    store.goap_store(f"plan-{tag}", {"steps": [tag, 1]})
    if store.stage == 2:
        failpoints.arm("rvf.after-data-write", action=_eio, times=1)
        store.put(f"diverged-{tag}", b"only in sqlite")
        failpoints.disarm()
    else:
        store._control.record("put", [f"k001-{tag}"], [], OSError(5, "injected"),
                              roles(store.stage).mirror or "rvf", store.stage)


def more(store: StageAdapter, failpoints: ArmedFailpoints) -> None:
    """Writes after the backup that touch everything the backup holds."""
    fill(store, "after", failpoints)
    store.delete("k005")
    store.goap_delete("plan-before")


def _eio(name: str) -> None:
    raise OSError(5, f"injected EIO at {name}")


def _opened(disk: SimDisk, stage: int, fp: ArmedFailpoints | None = None) -> StageAdapter:
    return open_stage(PATH, sim_env(disk, failpoints=fp or ArmedFailpoints()), stage)


def _read(disk: SimDisk, path: str) -> bytes:
    f = sim_env(disk).fs.open(path, "r")
    try:
        return f.read(0, f.size())
    finally:
        f.close()


def _write(disk: SimDisk, path: str, data: bytes) -> None:
    f = sim_env(disk).fs.open(path, "w")
    f.write(0, data)
    f.close()


@pytest.mark.parametrize("stage", range(5))
def test_backup_write_restore_round_trip_in_each_stage(stage: int) -> None:
    disk, fp = SimDisk(DiskImage.empty("/data")), ArmedFailpoints()
    store = _opened(disk, stage, fp)
    assert isinstance(store, Backupable) and store.declaration.has(Capability.BACKUP)
    fill(store, "before", fp)
    at_backup = seen(store)
    assert at_backup[4], "the queue holds the divergence"
    files = {n: _read(disk, f"{PATH}/{n}") for n in sim_env(disk).fs.listdir(PATH)}
    store.backup(DEST)
    assert {n: _read(disk, f"{PATH}/{n}") for n in files} == files   # nothing changed
    assert sorted(sim_env(disk).fs.listdir("/data")) == ["stage", "stage.bak"]   # no litter
    more(store, fp)
    assert seen(store) != at_backup
    store.restore(DEST)
    assert seen(store) == at_backup
    assert sim_env(disk).fs.listdir(f"{PATH}/{PENDING}") == []
    store.put("after-restore", b"usable")
    store.close()
    again = _opened(disk, 0)   # the stage is the adapter's durable state, not the name's
    assert again.stage == stage and again.get("after-restore") == b"usable"
    again.delete("after-restore")
    assert seen(again) == at_backup
    again.close()


def test_a_backup_restores_the_stage_it_was_taken_in() -> None:
    disk, fp = SimDisk(DiskImage.empty("/data")), ArmedFailpoints()
    store = _opened(disk, 3, fp)
    fill(store, "before", fp)
    at_backup = seen(store)
    store.backup(DEST)
    store.rollback()
    store.rollback()   # now stage 1: RVF holds only vectors as the truth
    more(store, fp)
    store.restore(DEST)
    assert store.stage == 3 and seen(store) == at_backup
    assert set(store._stores) == set(roles(3).stores)
    store.close()


def test_a_stage0_backup_into_stage4_leaves_rvf_until_a_promotion_catches_it_up() -> None:
    disk, fp = SimDisk(DiskImage.empty("/data")), ArmedFailpoints()
    store = _opened(disk, 0, fp)
    fill(store, "before", fp)
    at_backup = seen(store)
    store.backup(DEST)
    for _ in range(4):
        store.promote()
    more(store, fp)
    store.restore(DEST)
    assert seen(store) == at_backup and set(store._stores) == {"sqlite"}
    for _ in range(4):   # every catch-up is a whole sync: RVF's old records never show
        store.promote()
    assert seen(store)[1:4] == at_backup[1:4]
    store.close()


def _recorded(act: str) -> tuple[SimDisk, int, int, tuple[object, ...], tuple[object, ...]]:
    """A stage-2 adapter backed up, promoted to 3 and written to; then ``act`` ("backup" or
    "restore") recorded: the disk, the span of ``act``, the adapter before it and the backup's
    contents."""
    disk, fp = SimDisk(DiskImage.empty("/data")), ArmedFailpoints()
    store = _opened(disk, 2, fp)
    fill(store, "before", fp)
    at_backup = seen(store)
    if act == "restore":
        store.backup(DEST)
        store.promote()
        more(store, fp)
    old = seen(store)
    store.close()
    disk = SimDisk(disk.cache_image())
    store = _opened(disk, 0)
    start = disk.position
    getattr(store, act)(DEST)
    end = disk.position
    store.close()
    return disk, start, end, old, at_backup


def _pending(disk: SimDisk) -> int | None:
    """The stage a committed restore names in the control record on ``disk``, if any."""
    control = StageControl(open_sqlite(f"{PATH}/control.db", sim_env(disk)), "control.db")
    try:
        record = control.stage()
        return None if record is None else record.restoring
    finally:
        control.close()


def test_a_crash_anywhere_in_a_restore_reopens_with_the_old_contents_or_the_backups() -> None:
    disk, start, end, old, backup = _recorded("restore")
    inside = list(range(start + 1, end + 1))
    outcomes, finished = [], 0
    for crash, image in enumerate_crash_states(disk.base, disk.trace,
                                               {m: inside for m in MODELS}, MODELS, 40, 7):
        crashed = SimDisk(image)
        pending = _pending(crashed)
        store = _opened(crashed, 0)
        got = seen(store)
        store.close()
        assert got in (old, backup), (crash, got[0])
        if crash.position == end:   # the restore had returned: durable (WAL, FULL)
            assert got == backup, crash
        if pending is not None:   # past the commit point: the open finished it
            assert got == backup and _pending(crashed) is None, crash
            finished += 1
        outcomes.append(got == backup)
    assert len(outcomes) >= 30 and finished > 0 and any(outcomes) and not all(outcomes)


def test_a_crash_anywhere_in_a_backup_leaves_the_adapter_and_no_partial_backup() -> None:
    disk, start, end, old, _ = _recorded("backup")
    inside = list(range(start + 1, end + 1))
    checked = whole = 0
    for crash, image in enumerate_crash_states(disk.base, disk.trace,
                                               {m: inside for m in MODELS}, MODELS, 40, 7):
        crashed = SimDisk(image)
        store = _opened(crashed, 0)
        assert seen(store) == old, crash
        store.put("k010", b"changed after the crash")
        try:
            store.restore(DEST)
        except CorruptStore as exc:   # nothing, or not whole, at DEST: refused, unchanged
            assert crash.position < end and exc.path == DEST, crash
            assert store.get("k010") == b"changed after the crash"
        else:
            whole += 1
            assert seen(store) == old, crash
        store.close()
        checked += 1
    assert checked >= 30 and whole > 0


def _container(disk: SimDisk) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The backup's bytes and each section's (offset, length), read as the module docstring
    lays them out: the prefix fields, the header and each part."""
    data = _read(disk, DEST)
    prefix = struct.Struct(">8sII32s")
    magic, _, hlen, _ = prefix.unpack(data[:prefix.size])
    assert magic == MAGIC
    header = json.loads(data[prefix.size:prefix.size + hlen])
    where = {"magic": (0, 8), "header length": (12, 4), "header sum": (16, 32),
             "header": (prefix.size, hlen)}
    at = prefix.size + hlen
    for part in header["parts"]:
        where[part["name"]] = (at, part["length"])
        at += part["length"]
    assert at == len(data)
    return data, where


@pytest.mark.parametrize("stage", [2, 4])
def test_a_damaged_or_partial_container_is_refused_and_the_adapter_unchanged(stage: int
                                                                            ) -> None:
    disk, fp = SimDisk(DiskImage.empty("/data")), ArmedFailpoints()
    store = _opened(disk, stage, fp)
    fill(store, "before", fp)
    store.backup(DEST)
    data, where = _container(disk)
    assert set(where) >= {"divergences", *roles(stage).stores}
    more(store, fp)
    now = seen(store)
    bad = [(f"flipped in {name}", data[:at + n // 2] + bytes([data[at + n // 2] ^ 0x40])
            + data[at + n // 2 + 1:]) for name, (at, n) in where.items()]
    bad += [("cut short", data[:-1]), ("one byte more", data + b"\0"), ("empty", b"")]
    for what, content in bad:
        _write(disk, "/data/bad", content)
        with pytest.raises(CorruptStore) as caught:
            store.restore("/data/bad")
        assert caught.value.path == "/data/bad", what
        assert seen(store) == now, what
        fs = sim_env(disk).fs
        assert not fs.exists(f"{PATH}/{PENDING}") or fs.listdir(f"{PATH}/{PENDING}") == [], what
    with pytest.raises(CorruptStore, match="no backup"):
        store.restore("/data/missing")
    store.put("still", b"usable")
    store.close()
    again = _opened(disk, 0)
    assert again.get("still") == b"usable" and again.stage == stage
    again.close()


def test_a_part_whose_sum_matches_but_its_store_refuses_is_refused() -> None:
    disk, fp = SimDisk(DiskImage.empty("/data")), ArmedFailpoints()
    store = _opened(disk, 1, fp)
    fill(store, "before", fp)
    store.backup(DEST)
    data, where = _container(disk)
    header = json.loads(data[where["header"][0]:sum(where["header"])])
    at, n = where["rvf"]
    garbage = b"\0" * n   # a container made by something else, sums and all
    header["parts"][[p["name"] for p in header["parts"]].index("rvf")]["blake2b"] = \
        hashlib.blake2b(garbage, digest_size=32).hexdigest()
    raw = json.dumps(header).encode()
    forged = (struct.pack(">8sII32s", MAGIC, 1, len(raw),
                          hashlib.blake2b(raw, digest_size=32).digest())
              + raw + data[sum(where["header"]):at] + garbage + data[at + n:])
    _write(disk, "/data/forged", forged)
    now = seen(store)
    with pytest.raises(CorruptStore, match="rvf part") as caught:
        store.restore("/data/forged")
    assert caught.value.path == "/data/forged" and seen(store) == now
    store.close()


def test_backup_is_declared_only_where_every_store_and_the_commit_point_allow_it() -> None:
    disk = SimDisk(DiskImage.empty("/data"))
    for name, options, want in [("a", {}, True), ("b", {"journal_mode": "OFF"}, False),
                                ("c", {"synchronous": "NORMAL"}, False)]:
        store = open_stage(f"/data/{name}", sim_env(disk), 4, **options)
        # stage 4 uses RVF alone, which declares backup: the control file decides
        assert store.store("rvf").declaration.has(Capability.BACKUP)
        assert store.declaration.has(Capability.BACKUP) is want, options
        store.close()


def test_certify_stage0_stage2_stage4_passes_the_backup_row(tmp_path: Path,
                                                             capsys: Any) -> None:
    code = main(["certify", "stage0", "stage2", "stage4", "--scenario", "adr072-backup",
                 "--budget", "quick", "--seed", "3", "--out", str(tmp_path), "--quiet"])
    capsys.readouterr()
    rows = {path.parts[-3]: json.loads(path.read_text())["rows"]
            for path in tmp_path.glob("*/*/certificate.json")}
    assert sorted(rows) == ["stage0", "stage2", "stage4"], rows
    for backend, [row] in rows.items():
        assert row["verdict"] == "pass", (backend, row)
        assert row["measured"]["crashes"] > 0 and row["measured"]["damaged_backups"] > 0, row
    assert code == 0
