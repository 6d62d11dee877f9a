"""Probing a backend for an option by trying it, on a scratch simulated disk."""

from __future__ import annotations

import contextlib

from crashgate.backends import BackendSpec, BadOption, VectorRecord
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env

__all__ = ["accepts_readonly"]

_DIR = "/probe"


def accepts_readonly(spec: BackendSpec) -> bool:
    """Whether the backend opens an existing store with ``readonly=true``. The store is given
    one record first: a store may make its file only at its first write (the real
    ``@ruvector/rvf`` learns its dimension there), and a reader opens what a writer wrote."""
    disk = SimDisk(DiskImage.empty(_DIR))
    path = f"{_DIR}/store"
    try:
        writer = spec.open(path, sim_env(disk))
        # a store of another fixed dimension refuses the record: it made its file at open
        with contextlib.suppress(ValueError):
            if hasattr(writer, "upsert"):
                writer.upsert([VectorRecord.of(1, [0.5, 0.25, 0.125, 1.0])])
            elif hasattr(writer, "put"):
                writer.put("probe", b"1")
        writer.close()
        store = spec.open(path, sim_env(disk), readonly="true")
    except BadOption:
        return False
    store.close()
    return True
