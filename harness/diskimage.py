"""A disk image (``DiskImage``): an immutable snapshot of files and directories, its contents
shared in chunks (``content``); and how an image is laid out as inodes, the way the simulated
disk and the crash-state replay both number them (``layout``, ``walk_tree``)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import FrozenInstanceError

from crashgate.harness.content import Content

__all__ = ["ROOT_INO", "DiskImage", "layout", "normpath", "walk_tree"]

ROOT_INO = 1


def normpath(path: str) -> str:
    """``"a//b/../c"`` -> ``"/a/c"``: absolute, normalised; relative paths start at ``/``."""
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, got {type(path).__name__} {path!r}")
    p = posixpath.normpath(posixpath.join("/", path))
    return "/" + p.lstrip("/")  # normpath keeps a leading "//"


class DiskImage:
    """An immutable snapshot of a disk: ``files`` maps paths to contents; ``dirs`` holds every
    directory, ``/`` and the ancestors of every file and directory included.

    ``files`` values may be bytes-like or ``Content``. The image holds them as ``contents``
    (path -> ``Content``: chunks shared with the images and disks it came from, so a crash
    image of a large file copies only what differs); ``files`` (path -> bytes) flattens a file
    when it is first read and keeps it. Equality and the hash (computed once) are by contents.
    """

    contents: Mapping[str, Content]
    dirs: frozenset[str]

    def __init__(self, files: Mapping[str, bytes | Content] | None = None,
                 dirs: frozenset[str] = frozenset({"/"})) -> None:
        contents = {normpath(p): Content.of(b) for p, b in (files or {}).items()}
        all_dirs = {"/"}
        for d in [*map(normpath, dirs), *(posixpath.dirname(p) for p in contents)]:
            while d not in all_dirs:
                all_dirs.add(d)
                d = posixpath.dirname(d)
        clash = sorted(all_dirs & contents.keys())
        if clash:
            raise ValueError(f"DiskImage: {clash[0]!r} is both a file and a directory; "
                             "a path is one or the other")
        object.__setattr__(self, "contents", contents)
        object.__setattr__(self, "dirs", frozenset(all_dirs))

    @classmethod
    def empty(cls, *dirs: str) -> DiskImage:
        """An image holding only ``dirs`` (and their ancestors), all durable."""
        return cls({}, frozenset(dirs))

    @classmethod
    def _trusted(cls, contents: dict[str, Content], dirs: frozenset[str]) -> DiskImage:
        # Built by the replay, already normalised: skip the checks (hot path).
        image = object.__new__(cls)
        object.__setattr__(image, "contents", contents)
        object.__setattr__(image, "dirs", dirs)
        return image

    @property
    def files(self) -> Mapping[str, bytes]:
        """path -> bytes, each file flattened when first read (and kept)."""
        flat = self.__dict__.get("_files")
        if flat is None:
            flat = _FlatFiles(self.contents)
            object.__setattr__(self, "_files", flat)
        return flat

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: a DiskImage is immutable "
                                  "(build a new one)")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: a DiskImage is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiskImage):
            return NotImplemented
        return self is other or (self.dirs == other.dirs and self.contents == other.contents)

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((frozenset(self.contents.items()), self.dirs))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict[str, object]:
        # Not the cached hash (str/bytes hashes differ between processes), nor flat copies.
        return {"files": self.contents, "dirs": self.dirs}

    def __setstate__(self, state: dict[str, object]) -> None:
        files = state["files"]
        assert isinstance(files, Mapping)
        object.__setattr__(self, "contents", {p: Content.of(b) for p, b in files.items()})
        object.__setattr__(self, "dirs", state["dirs"])

    def __repr__(self) -> str:
        return f"DiskImage(files={dict(self.contents)!r}, dirs={self.dirs!r})"

    def diff(self, other: DiskImage) -> list[str]:
        """Human-readable differences from ``self`` to ``other``, one line each."""
        out = [f"+dir {d}" for d in sorted(other.dirs - self.dirs)]
        out += [f"-dir {d}" for d in sorted(self.dirs - other.dirs)]
        for p in sorted(self.contents.keys() | other.contents.keys()):
            a, b = self.contents.get(p), other.contents.get(p)
            if a is None:
                out.append(f"+file {p} ({len(b or b'')} bytes)")
            elif b is None:
                out.append(f"-file {p} ({len(a)} bytes)")
            else:
                first = a.first_difference(b)
                if first is not None:
                    out.append(f"~file {p}: {len(a)} -> {len(b)} bytes, first difference at "
                               f"{first}")
        return out


class _FlatFiles(Mapping[str, bytes]):
    """``DiskImage.files``: a read-only view of an image's contents as bytes, flattening each
    file once, when first read."""

    def __init__(self, contents: Mapping[str, Content]) -> None:
        self._contents = contents
        self._flat: dict[str, bytes] = {}

    def __getitem__(self, path: str) -> bytes:
        got = self._flat.get(path)
        if got is None:
            got = self._flat[path] = self._contents[path].tobytes()
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self._contents)

    def __len__(self) -> int:
        return len(self._contents)

    def __contains__(self, path: object) -> bool:
        return path in self._contents

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def layout(image: DiskImage) -> tuple[dict[int, dict[str, int]], dict[int, Content], int]:
    """Give an image inodes, deterministically (the disk and the replay must agree): returns
    ``(entries: dir inode -> {name: inode}, data: file inode -> content, next free inode)``."""
    entries: dict[int, dict[str, int]] = {ROOT_INO: {}}
    by_path = {"/": ROOT_INO}
    ino = ROOT_INO
    for d in sorted(image.dirs - {"/"}, key=lambda p: (p.count("/"), p)):
        ino += 1
        entries[ino] = {}
        entries[by_path[posixpath.dirname(d)]][posixpath.basename(d)] = ino
        by_path[d] = ino
    data: dict[int, Content] = {}
    for p in sorted(image.contents):
        ino += 1
        data[ino] = image.contents[p]
        entries[by_path[posixpath.dirname(p)]][posixpath.basename(p)] = ino
    return entries, data, ino + 1


def walk_tree(
    entries: Mapping[int, Mapping[str, int]],
) -> tuple[list[tuple[str, int]], frozenset[str]]:
    """Resolve names from the root: ``([(file path, inode)], dirs)``. An inode is a directory
    when it has an entry table. Unreachable inodes are left out; cycles are cut."""
    files: list[tuple[str, int]] = []
    dirs = {"/"}
    stack = [("/", ROOT_INO)]
    seen = {ROOT_INO}
    while stack:
        path, dino = stack.pop()
        for name, ino in entries.get(dino, {}).items():
            child = path + name if path == "/" else f"{path}/{name}"
            if ino in entries:
                if ino not in seen:
                    seen.add(ino)
                    dirs.add(child)
                    stack.append((child, ino))
            else:
                files.append((child, ino))
    return files, frozenset(dirs)
