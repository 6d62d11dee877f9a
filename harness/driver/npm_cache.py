"""Pinned npm packages installed once into crashgate's cache, for the drivers that load them.

A ``NpmTarget`` names a directory and the exact package versions it holds; ``install(target)``
returns ``<cache>/npm/<target.name>/`` with the packages in its ``node_modules``, installing
them with npm the first time: under a file lock (parallel tests and xdist workers install once),
into a temporary directory renamed into place when complete (a crash mid-install leaves no half
cache behind). ``<cache>`` is ``$CRASHGATE_CACHE``, else ``$XDG_CACHE_HOME/crashgate``, else
``~/.cache/crashgate``.

Missing ``node`` or ``npm`` is ``BackendMissing`` naming the install command; an npm that fails
(offline, unknown version) is ``BackendMissing`` with npm's last stderr lines: never a fallback
to another version or package.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crashgate.backends.errors import BackendMissing

__all__ = ["NODE_INSTALL", "NpmTarget", "cache_root", "install", "require_node"]

NODE_INSTALL = "apt-get install nodejs npm   (or any Node.js >= 18 with npm on PATH)"
_DONE = ".crashgate-installed.json"   # written last: its presence means the install completed
_NPM_TIMEOUT = 600.0


@dataclass(frozen=True)
class NpmTarget:
    """One cache directory: ``name`` (a path segment, e.g. ``rvf-node-0.2.3``), the exact
    ``dependencies`` ({package: version}) and npm ``overrides`` ({package: version}) that pin a
    transitive dependency (e.g. the engine under an SDK)."""

    name: str
    dependencies: Mapping[str, str]
    overrides: Mapping[str, str] = field(default_factory=dict)

    def package_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": "crashgate-npm-cache", "version": "0.0.0",
                                  "private": True, "dependencies": dict(self.dependencies)}
        if self.overrides:
            out["overrides"] = dict(self.overrides)
        return out


def cache_root() -> Path:
    """``$CRASHGATE_CACHE``, else ``$XDG_CACHE_HOME/crashgate``, else ``~/.cache/crashgate``."""
    explicit = os.environ.get("CRASHGATE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "crashgate"


def require_node(backend: str) -> tuple[str, str]:
    """The paths of ``node`` and ``npm`` on PATH, or ``BackendMissing`` for ``backend``
    naming the one missing and the install command."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, where in (("node", node), ("npm", npm)) if where is None]
    if missing:
        raise BackendMissing(backend, NODE_INSTALL,
                             f"{' and '.join(missing)} not found on PATH="
                             f"{os.environ.get('PATH', '')}")
    assert node is not None and npm is not None
    return node, npm


def install(target: NpmTarget, *, backend: str) -> Path:
    """The directory holding ``target``'s packages in ``node_modules``, installed on first use.

    ``backend`` names the crashgate backend that needs them, for the errors."""
    _, npm = require_node(backend)
    base = cache_root() / "npm"
    final = base / target.name
    if _complete(final, target):
        return final
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{target.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        if _complete(final, target):        # another process installed it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=base))
        try:
            _npm_install(npm, tmp, target, backend)
            if final.exists():              # a stale, incomplete or different install
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(directory: Path, target: NpmTarget) -> bool:
    try:
        done = json.loads((directory / _DONE).read_text())
    except (OSError, ValueError):
        return False
    return bool(done == target.package_json())


def _npm_install(npm: str, where: Path, target: NpmTarget, backend: str) -> None:
    (where / "package.json").write_text(json.dumps(target.package_json(), indent=2) + "\n")
    # --ignore-scripts: the packages ship prebuilt binaries (optionalDependencies per platform)
    # and need no install script; nothing from the registry runs at install time
    command = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts",
               "--no-package-lock", "--loglevel=error"]
    try:
        done = subprocess.run(command, cwd=where, capture_output=True, text=True,
                              timeout=_NPM_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BackendMissing(backend, _retry(where, target),
                             f"npm install did not finish in {_NPM_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise BackendMissing(backend, _retry(where, target),
                             f"npm install exited with {done.returncode}:\n{tail}")
    for package, version in {**target.dependencies, **target.overrides}.items():
        got = _installed_version(where, package)
        if got != version:
            raise BackendMissing(backend, _retry(where, target),
                                 f"npm installed {package} {got}, not the pinned {version}")
    (where / _DONE).write_text(json.dumps(target.package_json()))


def _installed_version(where: Path, package: str) -> str | None:
    try:
        meta = json.loads((where / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return version if isinstance(version, str) else None


def _retry(where: Path, target: NpmTarget) -> str:
    specs = " ".join(f"{p}@{v}" for p, v in target.dependencies.items())
    return (f"check the network and the npm registry, then try again (crashgate runs npm "
            f"install {specs} in {cache_root() / 'npm' / target.name}; it used {where})")
