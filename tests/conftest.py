from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/ holds shared helpers (conformance.py) imported by the test modules.
sys.path.insert(0, str(Path(__file__).parent))

POSTGRES_INSTALL = "pip install 'crashgate[postgres]'"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """This test process's own Postgres server (``reference.postgres.local_server()``: the one
    every ``pgvector`` store without ``url=`` uses), or a skip naming why it cannot run. It is
    stopped, and its temporary directory removed, at the end of the session."""
    try:
        import pgserver  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"Postgres tests need pgserver and psycopg ({exc}): {POSTGRES_INSTALL}")
    from crashgate.reference.postgres import local_server, stop_local_servers
    try:
        server = local_server()
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot start is a skip
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"the Postgres server cannot start here ({first}); the Postgres tests "
                    f"need it: {POSTGRES_INSTALL}")
    try:
        yield server
    finally:
        stop_local_servers()
