"""Small test backends for the fault procedures: correct ones where the reference has none, and
deliberately defective ones that each procedure must catch (``module:factory`` specs, e.g.
``faulty_backends:open_ignores_lock``; child processes find this module through PYTHONPATH).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from crashgate.backends import (
    Capability,
    DamagePromise,
    Declaration,
    Durability,
    Env,
    File,
    FileSystem,
    Option,
    VersionTooNew,
    check_options,
)
from crashgate.reference.indexeddb import IndexedDB
from crashgate.reference.json_store import open_json
from crashgate.reference.lease import LEASE_STORE, Lease, LeaseRecord, read_lease

__all__ = ["LeaseKV", "open_accepts_newer", "open_ignores_fsync_errors", "open_ignores_lock",
           "open_lease_kv", "open_lease_kv_steals", "open_lease_kv_unfenced",
           "open_leaves_sidecar"]


# -- duplicate writers: an RVF store that ignores its lock but still declares one ------------


def open_ignores_lock(path: str, env: Env, **options: str) -> Any:
    """The real RVF store opened with ``lock=false``; it still declares ``writer-lock``."""
    from crashgate.reference.rvf.store import open_rvf

    return open_rvf(path, env, **{**options, "lock": "false"})


# -- version skew: an RVF store that opens a too-new file anyway ---------------------------


def open_accepts_newer(path: str, env: Env, **options: str) -> Any:
    """On ``VersionTooNew`` it opens again claiming the file's own version (and so writes to
    a file it does not understand)."""
    from crashgate.reference.rvf.store import open_rvf

    try:
        return open_rvf(path, env, **options)
    except VersionTooNew as exc:
        return open_rvf(path, env, **{**options, "wire_version": str(exc.found)})


def open_leaves_sidecar(path: str, env: Env, **options: str) -> Any:
    """Drops a marker file beside the store before it looks at the file, and never removes it
    when the open fails: a refused file is then no longer left as it was found."""
    from crashgate.reference.rvf.store import open_rvf

    env.fs.open(path + ".opening", "w").close()
    store = open_rvf(path, env, **options)
    env.fs.remove(path + ".opening")
    return store


# -- I/O errors: a JSON store that ignores a failed fsync ----------------------------------


class _SwallowSync:
    """A file whose ``sync`` never reports an error (fsyncgate's mistake)."""

    def __init__(self, inner: File) -> None:
        self._inner = inner
        self.path = inner.path

    def read(self, offset: int, size: int) -> bytes:
        return self._inner.read(offset, size)

    def write(self, offset: int, data: bytes) -> None:
        self._inner.write(offset, data)

    def size(self) -> int:
        return self._inner.size()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def sync(self) -> None:
        # the defect: the data is not durable, and the write is acknowledged anyway
        with contextlib.suppress(OSError):
            self._inner.sync()

    def close(self) -> None:
        self._inner.close()


@dataclasses.dataclass
class _SwallowSyncFS:
    inner: FileSystem

    def open(self, path: str, mode: Any = "r") -> File:
        return _SwallowSync(self.inner.open(path, mode))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def open_ignores_fsync_errors(path: str, env: Env, **options: str) -> Any:
    """ARCH-001's JSON store, but a failed fsync is ignored and the put acknowledged."""
    return open_json(path, dataclasses.replace(env, fs=_SwallowSyncFS(env.fs)), **options)


class _SwallowWrite(_SwallowSync):
    def write(self, offset: int, data: bytes) -> None:
        # the defect: the bytes never reached the file, and the put is acknowledged anyway
        with contextlib.suppress(OSError):
            self._inner.write(offset, data)


@dataclasses.dataclass
class _SwallowWriteFS(_SwallowSyncFS):
    def open(self, path: str, mode: Any = "r") -> File:
        return _SwallowWrite(self.inner.open(path, mode))


def open_ignores_write_errors(path: str, env: Env, **options: str) -> Any:
    """ARCH-001's JSON store, but a failed write is ignored (its fsync and rename go on)."""
    return open_json(path, dataclasses.replace(env, fs=_SwallowWriteFS(env.fs)), **options)


# -- leases: a key-value store on the IndexedDB model with the heartbeat lease --------------

KV_STORE = "kv"
LEASE_KV_DECLARATION = Declaration(
    durability=Durability.POWER_LOSS,
    capabilities=frozenset({Capability.KV, Capability.LEASE}),
    notes={"test": "tests/faulty_backends.py",
           "damage": "the IndexedDB model reads its log up to the first frame that fails its "
                     "checksum: damage rolls back to the transactions before it"},
    damage=DamagePromise.ROLLBACK,
)
OPTIONS = {"readonly": Option("false", ("true", "false"), help="open without the lease")}


def _steal(db: IndexedDB) -> Lease:
    """The defect: take the lease whoever holds it, fresh or not (a new token all the same)."""
    tab = "tab-thief"
    with db.transaction(LEASE_STORE, "readwrite") as txn:
        rec = read_lease(txn)
        token = (rec.token if rec else 0) + 1
        txn.put(LEASE_STORE, "writer", LeaseRecord(tab, token, db.env.clock.time()).to_json())
    return Lease(db, tab, token)


class LeaseKV:
    """Key-value pairs in an IndexedDB object store, written under ADR-032's browser lease.
    ``fencing=False`` skips the lease check on writes (defective); ``steal=True`` takes over
    even a fresh lease (defective)."""

    def __init__(self, path: str, env: Env, *, readonly: bool, fencing: bool = True,
                 steal: bool = False) -> None:
        self.path = path
        self._fencing = fencing
        self.declaration = LEASE_KV_DECLARATION
        self._db = IndexedDB(path, env, stores=() if readonly else (KV_STORE, LEASE_STORE),
                             readonly=readonly)
        self._lease: Lease | None = None
        if not readonly:
            try:
                self._lease = _steal(self._db) if steal else Lease.acquire(self._db)
            except BaseException:
                self._db.close()
                raise

    def _write(self, puts: Mapping[str, bytes], deletes: Iterable[str]) -> None:
        if self._lease is None:
            raise PermissionError(f"{self.path} is open read-only")
        with self._db.transaction([KV_STORE, LEASE_STORE], "readwrite") as txn:
            if self._fencing:
                self._lease.guard(txn)
            for k in deletes:
                txn.delete(KV_STORE, k)
            for k, v in puts.items():
                txn.put(KV_STORE, k, base64.b64encode(bytes(v)).decode())

    def put(self, key: str, value: bytes) -> None:
        self._write({key: value}, ())

    def delete(self, key: str) -> None:
        self._write({}, (key,))

    def get(self, key: str) -> bytes | None:
        v = self._db.get(KV_STORE, key)
        return None if v is None else base64.b64decode(v)

    def scan(self, prefix: str = "") -> list[tuple[str, bytes]]:
        if KV_STORE not in self._db.object_store_names():
            return []
        return sorted((str(k), base64.b64decode(v)) for k, v in self._db.items(KV_STORE)
                      if str(k).startswith(prefix))

    def close(self) -> None:
        try:
            if self._lease is not None:
                self._lease.release()
        finally:
            self._db.close()


def _lease_kv(path: str, env: Env, options: Mapping[str, str], **kw: bool) -> LeaseKV:
    opts = check_options("lease-kv", options, OPTIONS)
    return LeaseKV(path, env, readonly=opts["readonly"] == "true", **kw)


def open_lease_kv(path: str, env: Env, **options: str) -> LeaseKV:
    return _lease_kv(path, env, options)


def open_lease_kv_unfenced(path: str, env: Env, **options: str) -> LeaseKV:
    """Defective: a writer whose lease was taken over still writes (no fencing)."""
    return _lease_kv(path, env, options, fencing=False)


def open_lease_kv_steals(path: str, env: Env, **options: str) -> LeaseKV:
    """Defective: a new writer takes over a fresh lease held by a live writer."""
    return _lease_kv(path, env, options, steal=True)
