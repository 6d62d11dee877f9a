"""Reproduction scripts for fault checks: a small Python file that re-runs one failing check
with the same arguments and exits 1 when it fails again (0 when it passes, 2 unknown)."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from crashgate.backends import BackendSpec
from crashgate.harness.verdict import Evidence, Verdict

__all__ = ["on_failure", "write_reproduction"]

_TEMPLATE = '''\
"""Re-runs: {title}

Run it with the same Python that ran crashgate, from anywhere: python <this file>
"""
import os
import sys
import tempfile

sys.path[:0] = {paths!r}

from crashgate.backends import resolve
from {module} import {function}

kwargs = {kwargs!r}
# arguments that named the run's scratch directory (removed after the run) get a fresh one
scratch = tempfile.mkdtemp(prefix="crashgate-repro-")
for key, rest in {scratch_args!r}.items():
    kwargs[key] = os.path.join(scratch, rest) if rest else scratch
    os.makedirs(os.path.dirname(kwargs[key]), exist_ok=True)
evidence = {function}(resolve({spec!r}), **kwargs)
print(evidence.verdict.value + ":", evidence.summary)
for line in evidence.details:
    print("  " + line)
sys.exit({{"pass": 0, "fail": 1}}.get(evidence.verdict.value, 2))
'''


def write_reproduction(workdir: Path, name: str, *, title: str, module: str, function: str,
                       spec: str, kwargs: Mapping[str, Any]) -> str:
    """Write ``workdir/name`` calling ``module.function(resolve(spec), **kwargs)``; ``kwargs``
    must be literals (repr round-trips). A str argument that is ``workdir`` or a path inside
    it becomes the same place inside a fresh temporary directory when the script runs, so the
    script runs after the row's scratch directory is gone. Returns the file's path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    # this run's own import roots (e.g. tests/ for a test backend); the interpreter's own are
    # there anyway
    base = (sys.prefix, sys.base_prefix)
    paths = [p for p in sys.path if p and Path(p).is_dir() and not p.startswith(base)]
    title = title.replace('"' * 3, "'" * 3).replace("\\", "/")
    root = str(workdir)
    scratch_args = {k: os.path.relpath(v, root) if v != root else ""
                    for k, v in kwargs.items()
                    if isinstance(v, str) and (v == root or v.startswith(root + os.sep))}
    literal = {k: v for k, v in kwargs.items() if k not in scratch_args}
    path.write_text(_TEMPLATE.format(title=title, paths=paths, module=module,
                                     function=function, spec=spec, kwargs=literal,
                                     scratch_args=scratch_args))
    return str(path)


def on_failure(evidence: Evidence, *, workdir: Path, name: str, spec: BackendSpec,
               check: Callable[..., Evidence], kwargs: Mapping[str, Any]) -> Evidence:
    """``evidence`` with, when it failed, a reproduction script (``workdir/name`` re-running
    ``check(spec, **kwargs)``) and a replay; ``check`` must be a module-level function."""
    if evidence.verdict is not Verdict.FAIL:
        return evidence
    script = write_reproduction(workdir, name, title=evidence.summary, module=check.__module__,
                                function=check.__name__, spec=spec.label, kwargs=kwargs)
    args = dict(kwargs)
    # attached, so the certificate keeps a copy once the row's scratch directory is gone (the
    # report points ``reproduce`` at that copy)
    return dataclasses.replace(evidence, reproduce=f"python {script}",
                               replay=lambda: check(spec, **args),
                               attachments={**evidence.attachments,
                                            name: Path(script).read_text()})
