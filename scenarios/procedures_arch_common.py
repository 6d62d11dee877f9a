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

from collections.abc import Mapping
from typing import Any

from crashgate.backends import MissionStore, Staged, canonical_mission
from crashgate.backends.missions import Discrepant, MissionSchema
from crashgate.harness.powerloss import DATA_DIR
from crashgate.harness.verdict import first_line

__all__ = ["PATH", "close_into", "differs", "first_line", "lacks", "read_missions", "same_doc"]

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
