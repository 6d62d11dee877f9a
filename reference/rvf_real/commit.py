"""The ``rvf-ruvector`` store's write path: creating a file and the bytes of one commit, in the
order the real runtime writes them (FORMAT-ruvector.md, "Commit, open and what is not stored").

- ``create_file``: the runtime's first manifest (epoch 0, empty directory) at offset 0, written
  to a temporary file, fsynced and renamed into place: a crash leaves no half file.
- ``encode_commit`` then ``append``: a commit appends its data segment (VEC and, with metadata,
  META; or a JOURNAL for a removal), fsyncs, appends a WITNESS and the MANIFEST naming them and
  fsyncs again: the second fsync is the commit point. The failpoints ``FAILPOINTS`` sit between.
"""

from __future__ import annotations

import os
from collections.abc import Set
from dataclasses import dataclass

from crashgate.backends import Failpoints, File, FileSystem
from crashgate.reference.rvf_real.declaration import FAILPOINTS
from crashgate.reference.rvf_real.layout import MANIFEST, WITNESS, witness_hash
from crashgate.reference.rvf_real.manifest import DirEntry, FileIdentity
from crashgate.reference.rvf_real.writer import (
    META,
    encode_manifest,
    encode_segment,
    encode_witness,
)

__all__ = ["WITNESS_DELETE", "WITNESS_INGEST", "Commit", "append", "create_file", "dir_of",
           "encode_commit"]

WITNESS_INGEST, WITNESS_DELETE = 1, 0   # the types the runtime's files hold


def dir_of(path: str) -> str:
    """The directory holding ``path`` (``"."`` for a bare name), whose entry a rename changes."""
    return os.path.dirname(path) or "."


def create_file(fs: FileSystem, path: str, tmp: str, *, dimension: int,
                identity: FileIdentity, version: int) -> tuple[DirEntry, int]:
    """Create ``path`` holding only the first manifest, written at ``tmp``, fsynced and renamed
    into place (the directory fsynced too). Returns the manifest's directory entry and the
    committed end."""
    payload = encode_manifest(epoch=0, dimension=dimension, total_vectors=0,
                              directory=(), deleted=(), identity=identity)
    raw = encode_segment(MANIFEST, 1, payload, version)
    f = fs.open(tmp, "w")
    try:
        f.write(0, raw)
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(dir_of(path))
    return DirEntry(1, 0, len(payload), MANIFEST), len(raw)


@dataclass(frozen=True)
class Commit:
    """One commit's bytes and the file after it: ``data`` (the data segment, then its META if
    any) goes at the committed end, ``tail`` (the witness, then the manifest) at ``tail_at``
    right after it. ``directory`` is the new manifest's directory plus the manifest's own
    entry, ``chain`` the witness-chain hash after it, ``next_id`` the next segment id and
    ``end`` the new committed end."""

    data: bytes
    tail: bytes
    tail_at: int
    directory: tuple[DirEntry, ...]
    chain: bytes
    next_id: int
    end: int


def encode_commit(*, directory: tuple[DirEntry, ...] | list[DirEntry], next_id: int, end: int,
                  epoch: int, dimension: int, identity: FileIdentity, chain: bytes,
                  version: int, timestamp_ns: int, data_type: int, data: bytes,
                  extra: bytes | None, witness: tuple[int, str], deleted: Set[int],
                  total_vectors: int) -> Commit:
    """The commit after ``directory`` (segment ids from ``next_id``, bytes from ``end``) at
    manifest epoch ``epoch``: a ``data_type`` segment of ``data``, a META of ``extra`` (None:
    no metadata), a witness ``(type, action)`` linked to ``chain`` and the manifest naming
    them with ``deleted`` ids and ``total_vectors``; every segment at ``version``."""
    sid, at, entries, blob = next_id, end, [], []
    for seg_type, payload in ((data_type, data), (META, extra)):
        if payload is None:
            continue
        entries.append(DirEntry(sid, at, len(payload), seg_type))
        blob.append(encode_segment(seg_type, sid, payload, version))
        sid, at = sid + 1, at + len(blob[-1])
    w_payload = encode_witness(witness[0], timestamp_ns, witness[1], chain)
    entries.append(DirEntry(sid, at, len(w_payload), WITNESS))
    tail = [encode_segment(WITNESS, sid, w_payload, version)]
    sid, at = sid + 1, at + len(tail[0])
    new_directory = [*directory, *entries]
    m_payload = encode_manifest(epoch=epoch, dimension=dimension, total_vectors=total_vectors,
                                directory=new_directory, deleted=deleted, identity=identity)
    tail.append(encode_segment(MANIFEST, sid, m_payload, version))
    return Commit(data=b"".join(blob), tail=b"".join(tail), tail_at=at - len(tail[0]),
                  directory=(*new_directory, DirEntry(sid, at, len(m_payload), MANIFEST)),
                  chain=witness_hash(w_payload), next_id=sid + 1, end=at + len(tail[1]))


def append(f: File, failpoints: Failpoints, end: int, commit: Commit) -> None:
    """Write ``commit`` at the committed ``end``: the data, fsync, the witness and the manifest,
    fsync (the commit point); ``FAILPOINTS`` after each step that a crash may follow."""
    f.write(end, commit.data)
    failpoints.hit(FAILPOINTS[0])
    f.sync()
    failpoints.hit(FAILPOINTS[1])
    f.write(commit.tail_at, commit.tail)
    failpoints.hit(FAILPOINTS[2])
    f.sync()
