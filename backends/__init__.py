"""The backend contract: store protocols, the env, typed errors and the registry of names."""

from __future__ import annotations

from crashgate.backends.contract import (
    BatchWrite,
    Capability,
    Compactable,
    Declaration,
    Derivable,
    Durability,
    Factory,
    Hit,
    KVStore,
    Store,
    VectorRecord,
    VectorStore,
    WitnessVerifiable,
)
from crashgate.backends.env import (
    Clock,
    Env,
    Failpoints,
    File,
    FileSystem,
    NoFailpoints,
    OpenMode,
    OsFS,
    SimulatedCrash,
    SystemClock,
    os_env,
)
from crashgate.backends.errors import (
    BackendMissing,
    BadOption,
    CorruptStore,
    CrashgateError,
    LeaseExpired,
    LockHeld,
    StoreClosed,
    UnknownBackend,
    VersionTooNew,
    close_matches_for,
)
from crashgate.backends.options import Option, check_options
from crashgate.backends.registry import (
    BUILTIN_NAMES,
    BackendSpec,
    known_names,
    resolve,
)

__all__ = [
    "BUILTIN_NAMES", "BackendMissing", "BackendSpec", "BadOption", "BatchWrite", "Capability", "Clock",
    "Compactable", "CorruptStore", "CrashgateError", "Declaration", "Derivable", "Durability",
    "Env", "Factory", "Failpoints", "File", "FileSystem", "Hit", "KVStore", "LeaseExpired",
    "LockHeld",
    "NoFailpoints", "OpenMode", "Option", "OsFS", "SimulatedCrash", "Store", "StoreClosed",
    "SystemClock", "UnknownBackend", "VectorRecord", "VectorStore", "VersionTooNew",
    "WitnessVerifiable", "check_options", "close_matches_for", "known_names", "os_env", "resolve",
]
