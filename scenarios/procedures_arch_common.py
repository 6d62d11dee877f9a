"""What the ARCH-001 rows of ``procedures_arch*.py`` share: the probe of what a store has (its
n/a reason), closing a store into a list of problems, and comparing mission documents.

The convention the rows rely on (ARCH-001's ``.vibe/state/``): the store's directory holds its
files, raw mission JSON files at its top level are legacy state that phase 3 imports when it
opens (``.vibe/state/active_mission.json``), and ``schema_file`` (``MissionSchema``) is a file
there whose name prefixes its journal and WAL (``missions.db``, ``missions.db-wal``). The phase
numbers are ARCH-001's: 1 dual-write (JSON read), 2 hybrid read (SQLite read, checked against
JSON), 3 and 4 SQLite primary.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crashgate.backends import BackendSpec, MissionStore, Staged, canonical_mission, os_env
from crashgate.backends.missions import Discrepant, MissionSchema
from crashgate.harness.missions import generate_missions
from crashgate.harness.powerloss import DATA_DIR
from crashgate.harness.verdict import Evidence, Verdict, first_line

__all__ = ["PATH", "Filled", "close_into", "differs", "filled_store", "first_line", "lacks",
           "read_missions", "same_doc"]

PATH = f"{DATA_DIR}/store"
"""Where a row's store lives on a simulated disk (``SimDisk(DiskImage.empty(DATA_DIR))``)."""


def lacks(store: Any, *, stage: int | None = None, schema: bool = False,
           discrepant: bool = False) -> str | None:
    """Why a row cannot run on ``store`` (the reason of its n/a), or None."""
    if not isinstance(store, MissionStore):
        return "keeps no mission documents (no MissionStore operations)"
    if not isinstance(store, Staged):
        return "has no phases (not a Staged adapter)"
    if stage is not None and store.stage != stage:
        return (f"phase {stage}'s row; this adapter opens in phase {store.stage} (certify it "
                f"as the phase {stage} adapter)")
    if schema and not isinstance(store, MissionSchema):
        return ("does not name its versioned SQLite file (no MissionSchema: schema_file, "
                "schema_version, old_schema_versions, write_schema_fixture)")
    if discrepant and not isinstance(store, Discrepant):
        return ("records no discrepancies (no Discrepant: fallbacks, mismatches, "
                "discrepancies)")
    return None


def close_into(store: Any, problems: list[str]) -> None:
    try:
        store.close()
    except Exception as exc:  # noqa: BLE001 - a failed close is a finding, reported with the rest
        problems.append(f"close raised {first_line(exc)}")


def same_doc(got: object, want: Mapping[str, Any]) -> bool:
    return isinstance(got, Mapping) and canonical_mission(got) == canonical_mission(want)


def differs(what: str, got: object, want: object) -> str:
    return f"{what} read {got!r:.120} where {want!r:.120} was acknowledged"


def read_missions(store: Any, docs: list[dict[str, Any]]) -> str | None:
    try:
        for doc in docs:
            got = store.mission_get(doc["mission_id"])
            if not same_doc(got, doc):
                return differs(f"mission {doc['mission_id']!r}", got, "its document")
        ids = store.mission_ids()
    except Exception as exc:  # noqa: BLE001
        return f"reading the missions raised {first_line(exc)}"
    want = sorted(d["mission_id"] for d in docs)
    if ids != want:
        return f"mission_ids() is {ids!r:.200}, not {want!r:.200}"
    return None


@dataclass(frozen=True)
class Filled:
    """A store made on real files, filled and closed cleanly: its directory ``path``, its
    ``schema_file`` and ``schema_version`` (``MissionSchema``), the ``docs`` it holds."""

    path: str
    schema_file: str
    schema_version: int
    docs: list[dict[str, Any]]


def filled_store(spec: BackendSpec, root: str, prefix: str, *, seed: int,
                 count: int) -> Filled | Evidence:
    """A new store in a fresh directory under ``root`` holding ``count`` seeded missions,
    closed; n/a when it has no ``MissionSchema``, unknown when it did not close cleanly (the
    schema rows then change its file by hand)."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(tempfile.mkdtemp(prefix=prefix, dir=root), "store")
    docs = generate_missions(count, seed)
    store = spec.open(path, os_env())
    problems: list[str] = []
    try:
        lacking = lacks(store, schema=True)
        if lacking:
            return Evidence.na(lacking)
        schema_file, version = store.schema_file, store.schema_version
        for doc in docs:
            store.mission_put(doc)
    finally:
        close_into(store, problems)
    if problems:
        return Evidence(Verdict.UNKNOWN, f"the store did not close cleanly before the test: "
                        f"{problems[0]}", {"missions": count, "seed": seed})
    return Filled(path, schema_file, version, docs)

