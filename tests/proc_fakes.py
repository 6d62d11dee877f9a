"""Misbehaving drivers for ``tests/test_proc_driver.py``: the Python host serving ``memory``,
broken in one way, chosen by the first argument::

    python tests/proc_fakes.py MODE

``garbage-hello`` prints a non-JSON line for hello; ``version-2`` answers hello with protocol 2;
``silent`` never answers; ``hang-put`` never answers ``put``; ``die-put`` writes to stderr and
exits mid ``put``; ``wrong-id`` answers with another request's id; ``derive`` declares a
capability the protocol cannot carry. ``no-fetch`` answers every ``fetch`` with EUNSUPPORTED
(a package with no read-back); ``reader`` serves ``rvf-ruvector``, answers ``fetch`` with
EUNSUPPORTED and declares ``reader: rvf-ruvector`` (crashgate reads the file back itself);
``bad-reader`` declares a reader no backend is named. ``no-io`` does not declare
``io_errors`` (it cannot inject I/O errors). ``linger`` stays alive after its stdin closes.
``locked-no-fetch`` serves ``rvf-ruvector`` (a writer lock) and answers every ``fetch`` with
EUNSUPPORTED, naming no reader. ``anonymous-lock`` serves ``rvf-ruvector`` and refuses a
second writer as the real package does: ELOCK, "RVF error 0x0300: LockHeld", no holder.
"""

from __future__ import annotations

import json
import os
import sys
import time

from crashgate.backends import resolve
from crashgate.harness.driver.python_host import Host


def main() -> None:
    mode = sys.argv[1]
    locked = ("reader", "locked-no-fetch", "anonymous-lock")
    host = Host(resolve("rvf-ruvector" if mode in locked else "memory"))
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        op = request["op"]
        if mode == "silent" or (mode == "hang-put" and op == "put"):
            time.sleep(3600)
        if mode == "die-put" and op == "put":
            sys.stderr.write("fake driver: dying in the middle of put\n")
            sys.stderr.flush()
            os._exit(7)
        if mode in ("no-fetch", "reader", "locked-no-fetch") and op == "fetch":
            out.write(json.dumps({"id": request["id"], "error": {
                "code": "EUNSUPPORTED", "message": "fetch: this fake has no read-back"}}
            ).encode() + b"\n")
            out.flush()
            continue
        if mode == "garbage-hello" and op == "hello":
            out.write(b"Loading the store, please wait...\n")
            out.flush()
            continue
        answer = json.loads(host.answer(line))
        if op == "hello" and mode == "version-2":
            answer["ok"]["protocol"] = 2
        if op == "hello" and mode == "no-io":
            answer["ok"]["declaration"]["io_errors"] = False
        if op == "hello" and mode == "derive":
            answer["ok"]["declaration"]["capabilities"].append("derive")
        if mode in ("reader", "bad-reader") and op in ("hello", "open"):
            doc = answer["ok"] if op == "hello" else (answer.get("ok") or {})
            if "declaration" in doc:
                doc["declaration"]["reader"] = ("rvf-ruvector" if mode == "reader" else
                                                "no-such-reader")
        if mode == "anonymous-lock" and answer.get("error", {}).get("code") == "ELOCK":
            answer["error"] = {"code": "ELOCK", "message": "RVF error 0x0300: LockHeld"}
        if op == "get" and mode == "wrong-id":
            answer["id"] = 999
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()
        if host.closed:
            return
    if mode == "linger":
        time.sleep(3600)   # a driver that outlives its parent's closed stdin


if __name__ == "__main__":
    main()
