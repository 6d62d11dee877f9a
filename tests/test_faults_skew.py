"""VersionSkew's means: how files of another version are made, and how files are damaged."""

from __future__ import annotations

import pytest

from crashgate.backends import VersionTooNew, resolve
from crashgate.harness.faults import Versioning, VersionSkew, damage, probe_versioning
from crashgate.harness.faults.skew import main_file, read_user_version, write_user_version
from crashgate.harness.ops import Put
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env
from crashgate.reference.sqlite_store import SCHEMA_VERSION

PATH = "/data/store"


def fresh() -> SimDisk:
    return SimDisk(DiskImage.empty("/data"))


def versioning(name: str) -> Versioning:
    spec = resolve(name)
    store = spec.open(PATH, sim_env(fresh()))
    decl = store.declaration
    store.close()
    return probe_versioning(spec, decl, lambda: sim_env(fresh()), PATH)


def test_rvf_versions_come_from_its_wire_version_option() -> None:
    v = versioning("rvf")
    assert (v.kind, v.option, v.current) == ("option", "wire_version", 1)


def test_sqlite_versions_come_from_its_user_version() -> None:
    v = versioning("sqlite")
    assert (v.kind, v.current) == ("sqlite-user-version", SCHEMA_VERSION)


def test_a_store_without_versions_has_none() -> None:
    assert versioning("memory").kind == "none"
    with pytest.raises(ValueError, match="cannot make files"):
        VersionSkew(1, 2, versioning("json"))


def test_user_version_is_read_and_written_in_the_sqlite_header() -> None:
    disk = fresh()
    env = sim_env(disk)
    resolve("sqlite").open(PATH, env).close()
    assert read_user_version(env.fs, PATH) == SCHEMA_VERSION
    write_user_version(env.fs, PATH, 7)
    assert read_user_version(env.fs, PATH) == 7
    with pytest.raises(VersionTooNew, match="requires schema version 7"):
        resolve("sqlite").open(PATH, sim_env(disk))


def test_skew_writes_one_version_and_opens_with_another() -> None:
    spec = resolve("rvf")
    skew = VersionSkew(2, 1, versioning("rvf"))
    disk = fresh()
    skew.write(spec, sim_env(disk), PATH, [Put("k", b"v")])
    with pytest.raises(VersionTooNew):
        skew.open_reader(spec, sim_env(disk), PATH)
    assert len(skew.fired) == 2


@pytest.mark.parametrize("how", ["garbage-header", "zeroed-header", "flipped-bytes",
                                 "truncated"])
def test_damage_changes_the_file(how: str) -> None:
    disk = fresh()
    fs = sim_env(disk).fs
    f = fs.open("/data/f", "w")
    f.write(0, bytes(range(256)) * 4)
    f.close()
    before = disk.cache_image().files["/data/f"]
    what = damage(fs, "/data/f", how, seed=3)  # type: ignore[arg-type]
    after = disk.cache_image().files["/data/f"]
    assert after != before and what.startswith("/data/f: ")


def test_main_file_is_the_path_or_the_largest_file_under_it() -> None:
    disk = fresh()
    fs = sim_env(disk).fs
    fs.makedirs("/data/dir")
    for name, size in (("a", 3), ("b", 9), ("c", 5)):
        f = fs.open(f"/data/dir/{name}", "w")
        f.write(0, b"x" * size)
        f.close()
    assert main_file(fs, "/data/dir") == "/data/dir/b"
    assert main_file(fs, "/data/dir/a") == "/data/dir/a"
    assert main_file(fs, "/data/none") is None
