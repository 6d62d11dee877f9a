"""What the tests that run the real npm packages in Node share: one skip when node or npm is
missing, with the command that installs them."""

from __future__ import annotations

import shutil

import pytest

__all__ = ["requires_node"]

requires_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not on PATH: apt-get install nodejs npm (the real @ruvector/rvf "
           "packages run in a Node process)")
