"""Probing a backend for an option by trying it, on a scratch simulated disk."""

from __future__ import annotations

from crashgate.backends import BackendSpec, BadOption
from crashgate.harness.simdisk import DiskImage, SimDisk
from crashgate.harness.simenv import sim_env

__all__ = ["accepts_readonly"]

_DIR = "/probe"


def accepts_readonly(spec: BackendSpec) -> bool:
    """Whether the backend opens an existing store with ``readonly=true``."""
    disk = SimDisk(DiskImage.empty(_DIR))
    path = f"{_DIR}/store"
    try:
        spec.open(path, sim_env(disk)).close()
        store = spec.open(path, sim_env(disk), readonly="true")
    except BadOption:
        return False
    store.close()
    return True
