"""ARCH-001's mission contract (``backends/missions.py``): what a mission document may hold, and
the canonical form every store compares by."""

from __future__ import annotations

import pytest

from crashgate.backends import canonical_mission, check_mission, check_mission_id, mission_sum


@pytest.mark.parametrize("doc, error, match", [
    ({"mission_id": "m", "a": (1, 2)}, TypeError, "is a tuple"),
    ({"mission_id": "m", "a": {1: "x"}}, TypeError, "keys are str"),
    ({"mission_id": "m", "a": [float("nan")]}, ValueError, "JSON cannot hold"),
    ({"mission_id": "m", "a": "\ud800"}, ValueError, "lone surrogate"),
    ({"mission_id": "m", "a": {"b": object()}}, TypeError, "JSON values only"),
    ({"mission_id": "m", "a": b"bytes"}, TypeError, "JSON values only"),
    ({"phase": "P"}, ValueError, "no 'mission_id'"),
    ({"mission_id": ""}, ValueError, "1-200 characters"),
    ({"mission_id": 7}, TypeError, "must be a str"),
    (["mission_id", "m"], TypeError, "a JSON object"),
])
def test_what_is_not_a_mission_document_is_refused_naming_it(doc: object, error: type,
                                                              match: str) -> None:
    with pytest.raises(error, match=match):
        check_mission(doc)


def test_a_mission_document_is_accepted_as_it_is() -> None:
    doc = {"mission_id": "m ü", "n": [1, 1.0, -0.0, True, None, 2**70],
           "nested": {"a": [[], {}], "s": "\x00 \u2603"}}
    assert check_mission(doc) == doc and check_mission(doc) is not doc
    assert check_mission_id("m ü") == "m ü"


def test_the_canonical_form_tells_json_types_apart() -> None:
    # Python says 1 == 1.0 == True; JSON, and a mission store, do not
    forms = {canonical_mission({"mission_id": "m", "v": v}) for v in (1, 1.0, True)}
    assert len(forms) == 3
    assert canonical_mission({"b": 1, "mission_id": "m"}) == \
        canonical_mission({"mission_id": "m", "b": 1})
    assert len(mission_sum({"mission_id": "m"})) == 16
