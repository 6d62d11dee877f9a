"""File contents made of fixed-size chunks, shared between versions (copy-on-write).

A crash image of a 95 MB file differs from the durable file in a few chunks at most; holding it
as flat bytes copies, hashes and compares the whole file once per crash state. Here a file's
bytes are ``chunks``: chunk ``k`` covers bytes ``[k * CHUNK_SIZE, (k + 1) * CHUNK_SIZE)``, the
last one may be shorter, none is empty. The split is canonical (equal bytes give equal chunk
tuples), so equality and hashing by chunks are exact, and a chunk that two versions share is
one ``bytes`` object: compared by identity, hashed once (Python caches a bytes object's hash).

- ``Content``: immutable. ``read``, ``len``, ``tobytes``, ``==``, ``hash`` (computed once),
  ``first_difference``; ``edit()`` starts a ``ChunkedFile`` over the same chunks.
- ``ChunkedFile``: mutable, for the simulated disk and the crash-state replay. A chunk is
  copied (to a ``bytearray``) only when a write lands inside it; a write that covers a whole
  chunk takes the written bytes as they are. ``freeze()`` gives a ``Content`` sharing every
  chunk that was not written.

A file of one chunk (up to 64 KiB: the small profile's JSON documents, a small SQLite file)
costs what flat bytes cost: its single chunk is the bytes, read and flattened without copying.
"""

from __future__ import annotations

__all__ = ["CHUNK_SIZE", "EMPTY", "ChunkedFile", "Content"]

_SHIFT = 16
CHUNK_SIZE = 1 << _SHIFT   # offset >> _SHIFT is the chunk index (cheaper than //, on hot paths)
_ZERO = bytes(CHUNK_SIZE)   # one shared object for every all-zero chunk (gaps, extensions)


class Content:
    """Immutable file bytes as ``chunks`` (see the module docstring); ``size`` bytes in all.
    Build one with ``Content.of(data)``, ``ChunkedFile.freeze()`` or ``Content.edit()...``."""

    __slots__ = ("_chunks", "_size", "_hash")

    def __init__(self, chunks: tuple[bytes, ...] = (), size: int = 0) -> None:
        # trusted: callers pass canonical chunks whose lengths sum to ``size``
        self._chunks = chunks
        self._size = size
        self._hash: int | None = None

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview | Content) -> Content:
        """The content holding ``data`` (a ``Content`` is returned as it is)."""
        if isinstance(data, Content):
            return data
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"file content must be bytes-like, got {type(data).__name__} "
                            f"{data!r:.60}: pass bytes (e.g. text.encode())")
        raw = bytes(data)   # no copy when it is bytes already
        n = len(raw)
        if n <= CHUNK_SIZE:
            return cls((raw,), n) if n else EMPTY
        return cls(tuple(raw[i:i + CHUNK_SIZE] for i in range(0, n, CHUNK_SIZE)), n)

    @property
    def chunks(self) -> tuple[bytes, ...]:
        return self._chunks

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def read(self, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)``, cut at the end of the content (``b""`` past it)."""
        chunks = self._chunks
        if len(chunks) == 1:    # a small file: one slice, as flat bytes would be
            return chunks[0][offset:offset + size]
        k = offset >> _SHIFT
        if k < len(chunks):     # within one chunk (a page, a header): one slice too
            lo = offset - (k << _SHIFT)
            chunk = chunks[k]
            if lo + size <= len(chunk):
                return chunk[lo:lo + size]
        return _read(chunks, self._size, offset, size)

    def tobytes(self) -> bytes:
        """The flat bytes (no copy for a content of one chunk)."""
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def edit(self) -> ChunkedFile:
        """A mutable file starting as this content; it shares every chunk until written."""
        return ChunkedFile(self)

    def first_difference(self, other: Content) -> int | None:
        """The first offset at which ``self`` and ``other`` differ (the shorter one's end when
        one is a prefix of the other); ``None`` when they are equal. Skips shared chunks."""
        for k, (a, b) in enumerate(zip(self._chunks, other._chunks, strict=False)):
            if a is b or a == b:
                continue
            at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                      min(len(a), len(b)))
            return k * CHUNK_SIZE + at
        return None if self._size == other._size else min(self._size, other._size)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Content):
            return NotImplemented
        # the tuple compare tries identity first: shared chunks cost nothing
        return self._size == other._size and self._chunks == other._chunks

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash(self._chunks)   # each chunk's hash is cached by its bytes
        return h

    def __reduce__(self) -> tuple[type[Content], tuple[tuple[bytes, ...], int]]:
        # not the cached hash: bytes hashes differ between processes
        return (Content, (self._chunks, self._size))

    def __repr__(self) -> str:
        if self._size <= 64:
            return f"Content({self.tobytes()!r})"
        return f"Content({self._size} bytes in {len(self._chunks)} chunks)"


EMPTY = Content()


def _read(chunks: tuple[bytes, ...] | list[bytes | bytearray], total: int, offset: int,
          size: int) -> bytes:
    end = min(offset + size, total)
    if offset >= end:
        return b""
    k, last = offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
    lo = offset - k * CHUNK_SIZE
    if k == last:
        chunk = chunks[k]
        hi = end - k * CHUNK_SIZE
        return chunk[lo:hi] if type(chunk) is bytes else bytes(memoryview(chunk)[lo:hi])
    parts: list[bytes | bytearray | memoryview] = [memoryview(chunks[k])[lo:]]
    parts += [chunks[i] for i in range(k + 1, last)]
    parts.append(memoryview(chunks[last])[:end - last * CHUNK_SIZE])
    return b"".join(parts)


class ChunkedFile:
    """Mutable file bytes over chunks that may be shared with ``Content`` values: a chunk is a
    ``bytes`` (shared, never changed) or a ``bytearray`` this file owns (its index is in
    ``_dirty``, so ``freeze`` visits only those)."""

    __slots__ = ("_chunks", "_size", "_dirty")

    def __init__(self, content: Content = EMPTY) -> None:
        self._chunks: list[bytes | bytearray] = list(content._chunks)
        self._size = content._size
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return self._size

    def read(self, offset: int, size: int) -> bytes:
        """As ``Content.read``."""
        chunks = self._chunks
        k = offset >> _SHIFT
        if k < len(chunks):     # within one chunk: one slice
            lo = offset - (k << _SHIFT)
            chunk = chunks[k]
            if lo + size <= len(chunk):
                return chunk[lo:lo + size] if type(chunk) is bytes else bytes(chunk[lo:lo + size])
        return _read(chunks, self._size, offset, size)

    def write(self, offset: int, data: bytes | bytearray) -> None:
        """Write ``data`` at ``offset``; a gap past the end reads as zeros. A chunk ``data``
        covers is a slice of it (``data`` itself when it is one whole chunk of bytes)."""
        # a bytearray is read through a view and each piece copied once: a chunk taken from
        # it must never change
        src = data if type(data) is bytes else memoryview(data)
        n = len(src)
        if not n:
            return
        chunks, dirty = self._chunks, self._dirty
        k = offset >> _SHIFT
        if k < len(chunks):     # inside one chunk, not all of it (a page): the common case
            lo = offset - (k << _SHIFT)
            chunk = chunks[k]
            if lo + n < len(chunk) or (lo and lo + n == len(chunk)):
                if not isinstance(chunk, bytearray):   # shared: copy it, once
                    chunk = chunks[k] = bytearray(chunk)
                    dirty.add(k)
                chunk[lo:lo + n] = src
                return
        if offset > self._size:
            self._grow(offset)
        end = offset + n
        pos = offset
        while pos < end:
            start = k * CHUNK_SIZE
            hi = min(end, start + CHUNK_SIZE)
            piece = src[pos - offset:hi - offset]
            if k == len(chunks):        # past the last chunk: a new one, the data itself
                chunks.append(piece if type(piece) is bytes else bytes(piece))
            else:
                chunk = chunks[k]
                if pos == start and hi >= start + len(chunk):  # covers the chunk: take it
                    chunks[k] = piece if type(piece) is bytes else bytes(piece)
                    dirty.discard(k)
                else:
                    if not isinstance(chunk, bytearray):   # shared: copy it, once
                        chunk = chunks[k] = bytearray(chunk)
                        dirty.add(k)
                    chunk[pos - start:hi - start] = piece   # may extend the last chunk
            pos = hi
            k += 1
        if end > self._size:
            self._size = end

    def truncate(self, size: int) -> None:
        """Cut to ``size`` bytes, or extend with zeros to it."""
        if size > self._size:
            self._grow(size)
        elif size < self._size:
            keep = -(-size // CHUNK_SIZE)
            chunks = self._chunks
            del chunks[keep:]
            self._dirty = {k for k in self._dirty if k < keep}
            rest = size - (keep - 1) * CHUNK_SIZE
            if keep and len(chunks[-1]) > rest:
                last = chunks[-1]
                if type(last) is bytearray:
                    del last[rest:]
                else:
                    chunks[-1] = last[:rest]
            self._size = size

    def _grow(self, size: int) -> None:
        chunks = self._chunks
        if chunks and len(chunks[-1]) < CHUNK_SIZE:   # fill the last chunk first
            last = chunks[-1]
            pad = bytes(min(CHUNK_SIZE - len(last), size - self._size))
            if isinstance(last, bytearray):
                last.extend(pad)
            else:
                chunks[-1] = last + pad
        full, rest = divmod(size, CHUNK_SIZE)
        chunks.extend([_ZERO] * (full - len(chunks)))
        if rest and len(chunks) == full:
            chunks.append(bytes(rest))
        self._size = size

    def freeze(self) -> Content:
        """The content now. Written chunks become ``bytes`` shared by the file and the result
        (the next write to one copies it again); the others are shared as they were."""
        chunks = self._chunks
        for k in self._dirty:
            chunks[k] = bytes(chunks[k])
        self._dirty = set()
        return Content(tuple(chunks), self._size)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"ChunkedFile({self._size} bytes, {len(self._dirty)} chunks written)"
