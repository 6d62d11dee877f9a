"""An append-only temporary file for bytes: a recorded trace's write data, out of memory.

A recorded run keeps every byte the store ever wrote (appends, compactions, checkpoints), but
the replay reads each write's data only now and then: once when a sync makes it durable, and
again for each crash state that keeps it while it is pending. ``Spill`` holds those bytes in a
``tempfile.TemporaryFile`` (already unlinked: it goes away with the process, and is closed when
the ``Spill`` is garbage collected), so the run's memory is its live data, not its history.

Reads use ``os.pread``, which takes no shared file position: a process forked after the run
(a crash-state worker that inherited the descriptor) and threads read safely at the same
time. Writes are the recording process's alone: a child that appended to the file it shares
with its parent would overwrite the parent's later data, so ``put`` refuses in any other
process.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["Spill"]


class Spill:
    """Bytes appended to an unlinked temporary file, read back by ``(offset, length)``.

    ``put(data) -> (offset, length)``; ``get(offset, length) -> bytes``. ``size`` is the number
    of bytes held. ``dir`` is where the file is made (default: ``tempfile``'s choice, which
    honours ``TMPDIR``).
    """

    __slots__ = ("_file", "_fd", "_end", "_pid", "name", "__weakref__")

    def __init__(self, dir: str | None = None) -> None:
        # TemporaryFile: unlinked at once on POSIX, so nothing is left behind however the
        # process ends; no context manager: the file lives as long as the Spill, and its file
        # object closes the descriptor when collected
        self._file = tempfile.TemporaryFile(prefix="crashgate-spill-", dir=dir)  # noqa: SIM115
        self._fd = self._file.fileno()
        self._end = 0
        self._pid = os.getpid()
        self.name = (f"spill file (fd {self._fd} of process {self._pid}, in "
                     f"{dir or tempfile.gettempdir()})")

    @property
    def size(self) -> int:
        """Bytes held (the file's length)."""
        return self._end

    @property
    def closed(self) -> bool:
        return self._file.closed

    def put(self, data: bytes | bytearray | memoryview) -> tuple[int, int]:
        """Append ``data`` (bytes-like); returns ``(offset, length)`` to ``get`` it back."""
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"Spill.put in process {os.getpid()}: {self.name} belongs to the process that "
                "made it; a forked child shares the file with its parent and may only read it "
                "(make a new Spill in the child to record there)")
        if self._file.closed:
            raise ValueError(f"Spill.put on a closed {self.name}: make a new Spill")
        view = memoryview(data).cast("B")
        offset = self._end
        done = 0
        while done < len(view):  # pwrite may write less than asked (signals, huge writes)
            done += os.pwrite(self._fd, view[done:], offset + done)
        self._end = offset + done
        return offset, done

    def get(self, offset: int, length: int) -> bytes:
        """The ``length`` bytes put at ``offset``."""
        if offset < 0 or length < 0 or offset + length > self._end:
            raise ValueError(f"Spill.get(offset={offset}, length={length}) is outside "
                             f"{self.name}, which holds {self._end} bytes: pass an "
                             "(offset, length) that put returned")
        if self._file.closed:
            raise ValueError(f"Spill.get on a closed {self.name}: its data is gone")
        got = os.pread(self._fd, length, offset)
        if len(got) == length:
            return got
        parts = [got]   # a short read: keep reading until the file ends
        have = len(got)
        while have < length:
            more = os.pread(self._fd, length - have, offset + have)
            if not more:
                raise OSError(f"short read from {self.name}: wanted {length} bytes at offset "
                              f"{offset}, the file ended after {have} (was it truncated by "
                              "another process?)")
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    def close(self) -> None:
        """Close the file now (its data is gone); collecting the Spill does the same."""
        self._file.close()

    def __repr__(self) -> str:
        state = "closed" if self._file.closed else f"{self._end} bytes"
        return f"Spill({self.name}, {state})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(f"a Spill cannot be pickled ({self.name}): pickle what refers to it "
                        "(a DiskOp pickles its bytes) or fork the process")
