"""What the ``rvf-ruvector`` reference store accepts and promises: its name, its options (and
the checks of their values), its failpoints and its ``Declaration``.

``declaration(version)`` is the store's declaration when it writes segment version ``version``;
``checked_wire_version(options)`` and ``checked_dimension(options)`` are the checked values of
those options (``BadOption`` naming the option, the value and what it may be).
"""

from __future__ import annotations

from collections.abc import Mapping

from crashgate.backends import BadOption, Capability, DamagePromise, Declaration, Durability, Option
from crashgate.reference.rvf_real.layout import FILE_FORMAT
from crashgate.reference.rvf_real.versions import MAX_VERSION

__all__ = ["CAPABILITIES", "FAILPOINTS", "NAME", "OPTIONS", "checked_dimension",
           "checked_wire_version", "declaration"]

NAME = "rvf-ruvector"
OPTIONS = {
    "dimension": Option("0", convert=int, help="vector dimension; 0 = from the file or the "
                        "first upsert (the runtime needs it to create a file)"),
    "readonly": Option("false", ("true", "false"), help="open without the writer lock"),
    "lock": Option("true", ("true", "false"), help="take the <file>.lock writer lock"),
    "stale_after": Option("30", convert=float, help="seconds after which a dead writer's lock "
                          "is recovered"),
    "wire_version": Option("1", convert=int, help="newest segment version this reader/writer "
                           "supports (the runtime's is 1); segments it writes carry it, newer "
                           "files are refused (versions.py)"),
}
FAILPOINTS = ("rvf-ruvector.after-data-write", "rvf-ruvector.after-data-sync",
              "rvf-ruvector.after-manifest-write")
CAPABILITIES = frozenset({Capability.VECTOR, Capability.BATCH, Capability.WRITER_LOCK,
                          Capability.METADATA_FILTER, Capability.FAILPOINTS,
                          Capability.WIRE_VERSION})


def checked_wire_version(options: Mapping[str, object]) -> int:
    """The ``wire_version`` option: 0-255, the header's version byte."""
    version = int(options["wire_version"])  # type: ignore[call-overload]
    if not 0 <= version <= MAX_VERSION:
        raise BadOption(NAME, "wire_version", version, ["an integer from 0 to 255 "
                                                        "(the header's version byte)"])
    return version


def checked_dimension(options: Mapping[str, object]) -> int:
    """The ``dimension`` option: 0 (from the file) or 1-65535 (a VEC payload's u16)."""
    want = int(options["dimension"])  # type: ignore[call-overload]
    if not 0 <= want <= 0xFFFF:
        raise BadOption(NAME, "dimension", want, ["0 (from the file)",
                                                  "1-65535 (a VEC payload's u16)"])
    return want


def declaration(version: int) -> Declaration:
    """The store's declaration when it writes segment version ``version`` (and reads 0 to it)."""
    return Declaration(
        durability=Durability.POWER_LOSS, capabilities=CAPABILITIES, file_format=FILE_FORMAT,
        wire_version=version, metric="l2", failpoints=FAILPOINTS,
        damage=DamagePromise.ROLLBACK,
        notes={"vectors": "float32 (the layout's VEC payload)", "queries": "exact (NumPy)",
               "metadata": "META segments (type 0x07) named in the manifest directory; the "
                           "real runtime ignores them (FORMAT-ruvector.md, 'Metadata')",
               "damage": "the header and content hash of every data segment (VEC, META, "
                         "JOURNAL) the directory names and the boot manifest's hash are "
                         "checked: damage in the committed region is "
                         "CorruptStore; a damaged last manifest shows the commit before",
               "versions": f"writes segment version {version}, reads 0-"
                           f"{version}; a newer file is refused with VersionTooNew "
                           "before the lock is taken (versions.py)"})
