"""Stores in other processes, driven through the process driver protocol
(``backends/PROTOCOL.md``): the client (``client.ProcStore``, ``open_command``, the ``proc:``
factory ``open_proc``), its child process (``child.Child``) and the Python host
(``python_host``), which serves any in-process backend behind the protocol.

Nothing is imported here: ``python -m crashgate.harness.driver.python_host`` must start fast.
"""

from __future__ import annotations
