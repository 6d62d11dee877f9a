"""Runnable reproductions of stateful-model failures.

Hypothesis prints the shrunk failing run of a state machine as code (``state = StoreMachine()``,
``state.put(key='a', value=b'')``, ..., ``state.teardown()``), attached to the exception as
notes. A reproduction is that code in a file that first rebuilds the same machine by name::

    from crashgate.harness.stateful import machine_for
    StoreMachine = machine_for('sqlite?synchronous=OFF')
    state = StoreMachine()
    ...

so ``python repro.py`` fails again while the bug is there. For that a backend needs a name that
another process can resolve: ``Target`` is a backend as the machine opens it plus that name.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashgate.backends import BackendSpec, Env, resolve
from crashgate.harness.verdict import Evidence, Verdict

__all__ = ["Target", "failing_steps", "pythonpath_for", "replay_reproduction",
           "reproduction_source", "target_for", "write_reproduction"]

_FIRST = re.compile(r"^state = \w+\(\)$")


@dataclass(frozen=True)
class Target:
    """A backend to drive: ``label`` is what ``machine_for`` is called with in a reproduction
    (``"sqlite?synchronous=OFF"``, ``"mypkg.store:open_store"``), ``import_root`` a directory to
    put on ``sys.path`` so that a factory outside any installed package imports there too."""

    label: str
    factory: Callable[..., Any]
    options: tuple[tuple[str, str], ...] = ()
    import_root: str | None = None

    def open(self, path: str, env: Env, **extra: str) -> Any:
        """Open a store (``extra`` options override the target's own)."""
        return self.factory(path, env, **{**dict(self.options), **extra})


def target_for(spec: Any, options: Mapping[str, object] | None = None) -> Target:
    """``spec`` a backend name, a ``BackendSpec`` or a factory callable; ``options`` are merged
    over the spec's own (values as str, as a name's query string gives them)."""
    extra = tuple((str(k), str(v)) for k, v in (options or {}).items())
    if isinstance(spec, str):
        spec = resolve(spec)
    if isinstance(spec, BackendSpec):
        merged = dict(spec.options)
        merged.update(extra)
        full = BackendSpec(spec.name, tuple(merged.items()), spec.target, spec.install)
        return Target(full.label, full.factory(), full.options, _import_root(full.target))
    if callable(spec):
        module = getattr(spec, "__module__", None)
        qualname = getattr(spec, "__qualname__", None)
        if not module or not qualname:
            raise TypeError(f"factory {spec!r} has no __module__/__qualname__; pass its name "
                            "as 'package.module:factory' instead")
        name = f"{module}:{qualname}"
        label = BackendSpec(name, extra, name, "").label
        return Target(label, spec, extra, _import_root(name))
    raise TypeError(f"spec must be a backend name, a BackendSpec or a factory "
                    f"open(path, env, **options), got {type(spec).__name__} {spec!r}")


def _import_root(target: str) -> str | None:
    """The directory from which ``target``'s module imports (None for crashgate's own)."""
    module_name = target.partition(":")[0]
    if module_name.startswith("crashgate.") or module_name == "__main__":
        return None
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    path = Path(file).resolve()
    depth = module_name.count(".") + 1 + (path.name == "__init__.py")
    return str(path.parents[depth - 1])


def pythonpath_for(target: str) -> str | None:
    """The directory to put on ``PYTHONPATH`` so that ``target`` (``module:factory``, already
    imported in this process) imports from a clean shell anywhere; None when it imports there
    anyway (crashgate's own, or installed into this interpreter)."""
    root = _import_root(target)
    if root is None:
        return None
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    resolved = Path(root).resolve()
    for base in (*installed, sys.prefix, sys.base_prefix):
        if resolved == Path(base).resolve() or Path(base).resolve() in resolved.parents:
            return None
    return str(resolved)


def failing_steps(exc: BaseException) -> list[str] | None:
    """The steps Hypothesis printed for the final failing run (from ``state = ...()`` to
    ``state.teardown()``), or None when the error carries none."""
    if isinstance(exc, BaseExceptionGroup) and not getattr(exc, "__notes__", None):
        for sub in exc.exceptions:
            found = failing_steps(sub)
            if found:
                return found
        return None
    notes: list[str] = list(getattr(exc, "__notes__", []))
    start = next((i for i, n in enumerate(notes) if _FIRST.match(n)), None)
    if start is None:
        return None
    end = next((i for i in range(start, len(notes)) if notes[i] == "state.teardown()"),
               len(notes) - 1)
    return notes[start:end + 1]


def reproduction_source(target: Target, steps: list[str], *, summary: str,
                        class_name: str = "StoreMachine") -> str:
    """A Python file that rebuilds the machine for ``target`` and runs ``steps``."""
    body = [s for s in steps[1:] if s != "state.teardown()"]
    first_line = summary.splitlines()[0] if summary else "a failing run"
    lines = [
        f'"""crashgate stateful model, shrunk failing run: {_docstring_safe(first_line)}',
        "",
        "Run: python <this file>. It fails again while the bug is there.",
        '"""',
        "# ruff: noqa",
        "import sys",
        "",
    ]
    if target.import_root:
        lines += [f"sys.path.insert(0, {target.import_root!r})", ""]
    lines += [
        "from crashgate.backends import VectorRecord",
        "from crashgate.harness.crashstates import CrashModel, CrashState",
        "from crashgate.harness.ops import (Batch, Delete, GoapDelete, GoapStore, MissionDelete,",
        "                                   MissionPut, Put, QUpdate, Remove, Upsert)",
        "from crashgate.harness.stateful import machine_for",
        "",
        f"{class_name} = machine_for({target.label!r})",
        "",
        f"state = {class_name}()",
        "try:",
    ]
    lines += [_indent(_evaluable(s)) for s in body] or ["    pass"]
    lines += ["finally:", "    state.teardown()", ""]
    return "\n".join(lines)


_ENUM_REPR = re.compile(r"<(\w+)\.(\w+): [^<>]*>")
# CrashState fields that only describe (pending) or hold their defaults: left out for brevity
_NOISE = re.compile(r",\s*(?:pending=\([^()]*\)|sector_size=512|torn=\(\)|garbage_seed=None)"
                    r"(?=[,)])")
_WRAP = re.compile(r"\n\s*")
_EXPLAINED = re.compile(r"  # or any other generated value$", re.MULTILINE)  # explain phase


def _evaluable(step: str) -> str:
    """A printed step as code: a StrEnum member is printed as its repr
    (``<CrashModel.PREFIX: 'prefix'>``), and a crash state over several lines."""
    step = _ENUM_REPR.sub(r"\1.\2", step)
    if "CrashState(" in step:
        step = _EXPLAINED.sub("", step)
        step = _NOISE.sub("", _WRAP.sub(" ", step)).replace("( ", "(").replace("), )", "))")
    return step


def _docstring_safe(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', "'''")[:200]


def _indent(step: str) -> str:
    # continuation lines of a multi-line step sit inside brackets, where indentation is free
    return "\n".join("    " + line for line in step.splitlines())


def write_reproduction(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(source, encoding="utf-8")
    return path


def replay_reproduction(path: Path, *, expect: str, timeout: float = 600.0) -> Evidence:
    """Run ``python path`` in a fresh interpreter: FAIL if it fails with an ``expect``
    exception (a type name) again, PASS if it runs clean, UNKNOWN otherwise."""
    try:
        proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                              timeout=timeout, cwd=str(path.parent), check=False)
    except subprocess.TimeoutExpired:
        return Evidence(Verdict.UNKNOWN, f"the reproduction {path} did not finish in "
                        f"{timeout:.0f} s", reproduce=f"python {path}")
    tail = proc.stderr.strip().splitlines()[-12:]
    measured = {"returncode": proc.returncode}
    if proc.returncode == 0:
        return Evidence(Verdict.PASS, f"the reproduction {path} no longer fails", measured,
                        reproduce=f"python {path}")
    pattern = re.compile(rf"^(?:[\w.]+\.)?{re.escape(expect)}(?::|$)")
    if any(pattern.match(line) for line in tail):
        last = next(line for line in reversed(tail) if pattern.match(line))
        return Evidence(Verdict.FAIL, f"the reproduction fails again: {last}", measured,
                        tuple(tail), reproduce=f"python {path}")
    return Evidence(Verdict.UNKNOWN, f"the reproduction {path} fails differently (expected "
                    f"{expect})", measured, tuple(tail), reproduce=f"python {path}")
