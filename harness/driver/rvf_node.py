"""The real ``@ruvector/rvf`` packages as crashgate backends: ``rvf-node`` and ``rvf-sdk``.

Each store is one Node child process running ``rvf_driver.js`` (next to this file) over
``backends/PROTOCOL.md``, with the pinned packages installed by ``npm_cache`` on first use:

- ``rvf-node``: ``@ruvector/rvf-node`` (the Rust engine behind N-API) used directly; option
  ``version=0.2.3`` (default) or ``0.1.8``.
- ``rvf-sdk``: ``@ruvector/rvf`` 0.2.3, the TypeScript SDK as applications use it (string ids, its
  ``<path>.idmap.json`` side file); option ``native=0.1.8`` (default: what ``npm install
  @ruvector/rvf@0.2.3`` resolves, the SDK asking for ``^0.1.7``) or ``0.2.3`` (pinned by an npm
  ``overrides`` entry).

Both take ``dimension=N`` (create the file at open; otherwise the first upsert creates it),
``readonly=true`` and ``timeout=SECONDS`` (the client's wait per request). What each promises is
the driver's ``hello`` declaration (see ``rvf_driver.js``), taken from the packages' docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crashgate.backends.env import Env
from crashgate.backends.options import Option, check_options
from crashgate.harness.driver.npm_cache import NpmTarget, install, require_node

__all__ = ["DRIVER_JS", "NATIVE_VERSIONS", "SDK_VERSION", "node_target", "open_rvf_node",
           "open_rvf_sdk", "sdk_target"]

DRIVER_JS = Path(__file__).with_name("rvf_driver.js")
NATIVE_VERSIONS = ("0.2.3", "0.1.8")
SDK_VERSION = "0.2.3"
_SDK_NATIVE_DEFAULT = "0.1.8"


def node_target(version: str) -> NpmTarget:
    """The cache directory of ``@ruvector/rvf-node`` ``version``, pinned exactly."""
    return NpmTarget(f"rvf-node-{version}", {"@ruvector/rvf-node": version})


def sdk_target(native: str) -> NpmTarget:
    """The cache directory of the SDK with the engine ``native`` under it, pinned by an npm
    ``overrides`` entry (the SDK's own range ``^0.1.7`` would let npm pick)."""
    return NpmTarget(f"rvf-sdk-{SDK_VERSION}-native-{native}", {"@ruvector/rvf": SDK_VERSION},
                     {"@ruvector/rvf-node": native})


def open_rvf_node(path: str, env: Env, **options: str) -> Any:
    """A store of ``@ruvector/rvf-node`` (option ``version``) at ``path`` (a file), driven in a
    Node child process."""
    known = {"version": Option(NATIVE_VERSIONS[0], NATIVE_VERSIONS), **_COMMON}
    checked = check_options("rvf-node", options, known)
    version = str(checked["version"])
    return _open(path, env, "native", node_target(version), "rvf-node", checked, options)


def open_rvf_sdk(path: str, env: Env, **options: str) -> Any:
    """A store of the ``@ruvector/rvf`` SDK (option ``native``: the engine under it) at ``path``
    (a file, plus the SDK's ``path.idmap.json``), driven in a Node child process."""
    known = {"native": Option(_SDK_NATIVE_DEFAULT, NATIVE_VERSIONS), **_COMMON}
    checked = check_options("rvf-sdk", options, known)
    native = str(checked["native"])
    return _open(path, env, "sdk", sdk_target(native), "rvf-sdk", checked, options)


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(f"timeout={raw}: must be > 0")
    return value


def _dimension(raw: str) -> int:
    value = int(raw) if raw else 0   # "": no dimension given
    if raw and value <= 0:
        raise ValueError(f"dimension={raw}: must be > 0")
    return value


_COMMON = {
    "dimension": Option("", convert=_dimension,
                        help="create the file at open with this dimension (else at the first "
                        "upsert)"),
    "readonly": Option("false", ("true", "false"),
                       help="open read-only (RvfDatabase.openReadonly), as every backend says it"),
    "timeout": Option("30", convert=_seconds, help="seconds the client waits per request"),
}


def _open(path: str, env: Env, target: str, npm: NpmTarget, backend: str,
          checked: dict[str, object], given: dict[str, str]) -> Any:
    # the process client is imported here so that naming the backend stays cheap
    from crashgate.harness.driver.client import open_command

    node, _ = require_node(backend)
    prefix = install(npm, backend=backend)
    command = [node, str(DRIVER_JS), "--target", target, "--prefix", str(prefix)]
    driver_options = {"readonly": "1"} if checked["readonly"] == "true" else {}
    if checked["dimension"]:
        driver_options["dimension"] = str(checked["dimension"])
    timeout = checked["timeout"]
    assert isinstance(timeout, float)
    return open_command(command, path, env, options=driver_options,
                        label=_label(backend, given), timeout=timeout)


def _label(name: str, options: dict[str, str]) -> str:
    return name + ("?" + "&".join(f"{k}={v}" for k, v in sorted(options.items()))
                   if options else "")
