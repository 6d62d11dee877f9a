"""Issue 16: "the store lacks this op" is the typed error ``Unsupported`` (``backends/errors.py``):
a process driver's ``EUNSUPPORTED`` answer to a store op becomes one naming that op, the harness
reads the op from it (``harness/unsupported.py``), and a row that hit it is ``unknown`` naming
the op (``harness/certify.py``). A bare ``NotImplementedError`` is nobody's missing op: it stays
the failure of whoever raised it."""

from __future__ import annotations

import pickle
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crashgate.backends import CorruptStore, Unsupported, VectorRecord, os_env, resolve
from crashgate.backends import proc_protocol as wire
from crashgate.harness.certify import certify
from crashgate.harness.unsupported import cannot_answer, unsupported_op
from crashgate.harness.verdict import Evidence, Verdict
from crashgate.scenarios.table import BUDGETS, Row, RowContext

FAKES = shlex.join([sys.executable, str(Path(__file__).with_name("proc_fakes.py"))])
NO_FETCH = "the store cannot answer fetch: nothing could be checked (fetch: this fake has no " \
           "read-back)"


# -- the error and the wire ------------------------------------------------------------------


def test_unsupported_names_the_op_and_why_and_survives_pickling() -> None:
    exc = Unsupported("fetch", "the package has no read-back")
    assert isinstance(exc, NotImplementedError)   # old `except NotImplementedError` still works
    assert (exc.op, exc.why) == ("fetch", "the package has no read-back")
    assert str(exc) == "the store does not offer fetch: the package has no read-back"
    exc.add_note("seen in row adr032-3")
    back = pickle.loads(pickle.dumps(exc))   # a row's worker process hands errors back pickled
    assert type(back) is Unsupported
    assert (back.op, back.why, str(back)) == (exc.op, exc.why, str(exc))
    assert back.__notes__ == ["seen in row adr032-3"]


def test_eunsupported_answering_a_store_op_is_unsupported_naming_it() -> None:
    doc = {"code": "EUNSUPPORTED", "message": "fetch: the package has no API that reads"}
    exc = wire.error_from_wire(doc, path="/data/s", op="fetch")
    assert isinstance(exc, Unsupported)
    assert exc.op == "fetch" and exc.why == "fetch: the package has no API that reads"
    # answering no store op (the open, the close) it names no op: not "the store lacks one"
    bare = wire.error_from_wire(doc, path="/data/s")
    assert type(bare) is NotImplementedError
    assert str(bare) == "fetch: the package has no API that reads"
    assert unsupported_op(bare) is None


@pytest.mark.parametrize("exc, message", [
    (Unsupported("compact", "no compaction"), "no compaction"),   # the words, not the prefix
    (NotImplementedError("unknown op 'x'"), "unknown op 'x'"),
])
def test_unsupported_and_not_implemented_go_out_as_eunsupported(exc: Exception,
                                                                message: str) -> None:
    assert wire.error_to_wire(exc) == {"code": "EUNSUPPORTED", "message": message}
    back = wire.error_from_wire(wire.error_to_wire(exc), path="/s", op="compact")
    assert isinstance(back, Unsupported) and back.op == "compact" and back.why == message


# -- through a process driver ----------------------------------------------------------------


def test_a_proc_store_that_cannot_fetch_raises_unsupported_naming_fetch(tmp_path: Path) -> None:
    store = resolve(f"proc:{FAKES} no-fetch").open(str(tmp_path / "s"), os_env())
    try:
        store.upsert([VectorRecord.of(1, [0.5, 1.0])])   # other ops are the store's as ever
        with pytest.raises(Unsupported) as info:
            store.fetch([1])
    finally:
        store.close()
    assert info.value.op == "fetch"
    assert unsupported_op(info.value) == "fetch"
    assert cannot_answer(info.value) == NO_FETCH


# -- what is and is not the store's missing op ----------------------------------------------


def _harness_helper() -> None:
    raise NotImplementedError("fetch: a harness helper's own gap")


def test_a_bare_not_implemented_error_is_not_the_stores() -> None:
    class Store:   # even raised inside a store's own method, by its name: not the typed error
        declaration = resolve("memory").open("/m", os_env()).declaration

        def fetch(self, ids: object) -> None:
            _harness_helper()

    for call in (_harness_helper, lambda: Store().fetch([1])):
        with pytest.raises(NotImplementedError) as info:
            call()
        assert unsupported_op(info.value) is None
        assert cannot_answer(info.value) is None
    assert cannot_answer(ValueError("fetch")) is None


def _raised(make: Callable[[], None]) -> BaseException:
    try:
        make()
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("nothing was raised")


def _wrapped(outer: Callable[[Unsupported], Exception], *, cause: bool) -> Callable[[], None]:
    def make() -> None:
        try:
            raise Unsupported("fetch", "no read-back")
        except Unsupported as exc:
            if cause:
                raise outer(exc) from exc
            raise outer(exc)   # noqa: B904 - the implicit context is what is tested
    return make


def test_a_wrapper_raised_from_unsupported_names_its_op_but_a_finding_stays_one() -> None:
    wrapped = _raised(_wrapped(lambda e: RuntimeError(f"the tool stopped: {e}"), cause=True))
    assert unsupported_op(wrapped) == "fetch"
    assert cannot_answer(wrapped) == ("the store cannot answer fetch: nothing could be checked "
                                      "(no read-back)")
    # an error raised while handling it (a fallback that failed) is a finding of its own
    handled = _raised(_wrapped(lambda e: AssertionError("the fallback lost a write"),
                               cause=False))
    assert handled.__context__ is not None and unsupported_op(handled) is None
    # so is damage reported from it: the contract's own errors are never "cannot answer"
    damaged = _raised(_wrapped(lambda e: CorruptStore("/s", "bad sum"), cause=True))
    assert unsupported_op(damaged) is None


# -- a row's verdict --------------------------------------------------------------------------


def _row(procedure: Callable[[RowContext], Evidence]) -> Row:
    return Row("test table", "t-1", "1", "a scenario", "an expectation", lambda _d: None,
               procedure)


def _fetch_back(ctx: RowContext) -> Evidence:
    store = ctx.spec.open(str(Path(ctx.workdir) / "s"), os_env())
    try:
        store.upsert([VectorRecord.of(1, [0.5, 1.0])])
        store.fetch([1])
    finally:
        store.close()
    return Evidence(Verdict.PASS, "read back", {"records": 1})


def _certify(tmp_path: Path, backend: str, procedure: Callable[[RowContext], Evidence]) -> Any:
    cert = certify(resolve(backend), [_row(procedure)], budget=BUDGETS["quick"], seed=7,
                   workdir=tmp_path, context_factory=RowContext)
    [result] = cert.results
    return result.evidence


def test_a_row_that_needs_an_op_the_store_lacks_is_unknown_naming_it(tmp_path: Path) -> None:
    ev = _certify(tmp_path, f"proc:{FAKES} no-fetch", _fetch_back)
    assert ev.verdict is Verdict.UNKNOWN
    assert ev.summary == NO_FETCH
    [(name, traceback)] = ev.attachments.items()   # the traceback is kept
    assert name == "t-1-error.txt" and "Unsupported" in traceback


def test_a_row_broken_by_a_bare_not_implemented_error_says_the_check_could_not_run(
        tmp_path: Path) -> None:
    def broken(_ctx: RowContext) -> Evidence:
        _harness_helper()
        return Evidence(Verdict.PASS, "unreachable", {"x": 1})

    ev = _certify(tmp_path, "memory", broken)
    assert ev.verdict is Verdict.UNKNOWN
    assert ev.summary == ("the check could not run: NotImplementedError: fetch: a harness "
                          "helper's own gap")
