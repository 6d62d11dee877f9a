"""crashgate's errors cross process boundaries as themselves: an error raised while a worker
process checks a crash state reaches the parent with its type, message, fields and notes."""

from __future__ import annotations

import pickle

import pytest

from crashgate.backends import (
    BackendMissing,
    BadOption,
    CorruptStore,
    CrashgateError,
    LockHeld,
    StoreClosed,
    UnknownBackend,
    VersionTooNew,
)
from crashgate.backends.errors import BadBackend, DuplicateOption, LeaseExpired

ERRORS: list[CrashgateError] = [
    LockHeld("/data/store", "pid 7 on host 'h', writer 1234abcd"),
    LeaseExpired("/data/store", 3, "a newer writer took the lease", holder="tab-2"),
    VersionTooNew("/data/store", found=3, supported=2, what="RVF version",
                  upgrade="pip install -U crashgate"),
    CorruptStore("/data/store", "a checksum does not match"),
    BackendMissing("pgvector", "pip install 'crashgate[pg]'", "no module named psycopg"),
    UnknownBackend("rfv", ["rvf", "rvlite"]),
    BadOption("rvf", "sync", "sometimes", ("one", "two")),
    DuplicateOption("rvf", "sync", ["one", "two"]),
    BadBackend("mod:factory", "the factory returned None", "return a store"),
    StoreClosed("/data/store"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_pickles_as_itself(error: CrashgateError) -> None:
    error.add_note("raised in crash-state worker process 42 while checking state #7")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error) and again.args == error.args
    assert vars(again) == vars(error)   # fields (path, holder, ...) and notes
