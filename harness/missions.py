"""Generated mission documents shaped like ARCH-001's ``.vibe/state/active_mission.json``.

Two generators of the same shape:

- ``mission_documents()``: a Hypothesis strategy for round trips and stateful runs. Beside the
  shape ARCH-001's adapter flattens (budget object, ``metadata.owner``, ``project_memory`` with
  its ``narrative`` array, ``domain.concepts``/``domain.concerns`` and ``trajectory``, nested
  ``artifacts.<type>.<name>.{ref,...}``, quality gates, the ``tool_calls`` audit array) it draws
  the cases a flattening gets wrong: unicode everywhere (object keys and the mission id too,
  NUL and astral characters included), large narratives, empty arrays and objects, absent
  optional fields, ints vs floats vs bools (``1``, ``1.0`` and ``true`` are different JSON),
  integers beyond 64 bits, nulls, deep nesting, unknown extra fields, and known fields of an
  unexpected type (a narrative that is a string, a budget that is a number). Failures shrink
  toward ``{"mission_id": ...}``.
- ``generate_missions(n, seed)``: plain ``random.Random`` documents of realistic size, fast
  enough for the importer benchmark's 10,000 missions; ids unique within one call.

Every document either generator makes passes ``backends.missions.check_mission``.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from crashgate.backends.missions import MAX_MISSION_ID, check_mission

if TYPE_CHECKING:  # Hypothesis is imported only when a strategy is built: keeps imports light
    from hypothesis.strategies import DrawFn, SearchStrategy

__all__ = ["PHASES", "STATUSES", "generate_missions", "mission_documents",
           "mission_id_strategy"]

PHASES = ("PLANNING", "CODING", "TESTING", "DEPLOYMENT", "MAINTENANCE")
STATUSES = ("pending", "in_progress", "completed", "failed", "blocked")
_GATES = ("lint", "typecheck", "unit_tests", "security_scan", "coverage")
_TOOLS = ("read_file", "write_file", "run_tests", "search_code", "git_commit", "shell")
_ARTIFACT_TYPES = ("planning", "coding", "testing", "deployment")
_ARTIFACT_NAMES = ("architecture", "feature_spec", "code_gen_spec", "test_plan", "qa_report",
                   "deploy_manifest")
_WORDS = ("mission", "agent", "schema", "budget", "narrative", "state", "sqlite", "json",
          "review", "plan", "commit", "gate", "café", "naïve", "übergang", "日本語", "データ",
          "🚀", "ok", "blocked", "migrate", "owner", "trajectory", "concern")


def mission_id_strategy() -> SearchStrategy[str]:
    """Mission ids: ARCH-001-like ones (``mission-<hex>``, ``genesis``) and any unicode of
    1-``MAX_MISSION_ID`` characters without NUL or a lone surrogate (``check_mission_id``):
    path separators, dots, case variants and ids long enough to be hashed into a file name."""
    from hypothesis import strategies as st

    chars = st.characters(codec="utf-8", exclude_characters="\x00")
    return st.one_of(
        st.sampled_from(["genesis", "mission-001", "test-001"]),
        st.integers(0, 2**32).map(lambda n: f"mission-{n:08x}"),
        st.text(chars, min_size=1, max_size=24),
        st.text(chars, min_size=MAX_MISSION_ID - 40, max_size=MAX_MISSION_ID),
        st.sampled_from([".", "..", "a/b", "A", "a", " ", "-", "%41", "k", "h.json"]),
    )


def mission_documents(*, max_items: int = 4, max_text: int = 24, large_text: int = 2_000,
                      max_depth: int = 24) -> SearchStrategy[dict[str, Any]]:
    """Mission documents (``dict``, each passing ``check_mission``).

    ``max_items``: the longest array or object of a known field (narrative entries, tool
    calls, artifacts per type ...); ``max_text``: the longest drawn string; ``large_text``: the
    length of the occasional large narrative summary (built by repeating a drawn string, so it
    costs nothing to draw; 0 for never); ``max_depth``: the deepest nesting of an extra field.
    The defaults keep an example small enough for CI; raise them for a soak."""
    from hypothesis import strategies as st

    if min(max_items, max_text, large_text, max_depth) < 0:
        raise ValueError(f"mission_documents sizes must be >= 0, got max_items={max_items}, "
                         f"max_text={max_text}, large_text={large_text}, max_depth={max_depth}")
    chars = st.characters(codec="utf-8")
    text = st.text(chars, max_size=max_text)
    words = st.sampled_from(_WORDS)
    key = st.one_of(words, st.text(chars, max_size=12))
    # ints of every size JSON allows (beyond 64 bits too), finite floats (-0.0 and 1e308
    # included), bools: ``1``, ``1.0`` and ``true`` must stay apart through every store
    number = st.one_of(st.integers(-2**31, 2**31), st.integers(-2**70, 2**70),
                       st.floats(allow_nan=False, allow_infinity=False), st.booleans())
    scalar = st.one_of(st.none(), st.booleans(), number, text)
    json_value = st.recursive(
        scalar, lambda inner: st.lists(inner, max_size=max_items)
        | st.dictionaries(key, inner, max_size=max_items), max_leaves=3 * max_items + 2)
    stamp = st.one_of(st.integers(0, 2**33).map(_iso), st.none(), number, text)
    odd: SearchStrategy[Any] = st.one_of(st.none(), st.just({}), st.just([]), number, text)

    def pick(*options: SearchStrategy[Any]) -> SearchStrategy[Any]:
        # each option as often as the others; st.one_of would flatten an option that is
        # itself a one_of into its branches, and weigh each branch as much as an option
        return st.integers(0, len(options) - 1).flatmap(lambda i: options[i])

    def shaped(usual: SearchStrategy[Any]) -> SearchStrategy[Any]:
        # a known field of another type (null, empty, a number, a string) one draw in four
        return pick(usual, usual, usual, odd)

    def items(of: SearchStrategy[Any]) -> SearchStrategy[list[Any]]:
        return st.lists(of, max_size=max_items)

    def obj(required: dict[str, SearchStrategy[Any]],
            optional: dict[str, SearchStrategy[Any]]) -> SearchStrategy[dict[str, Any]]:
        # plus unknown extra fields a newer writer may have added
        return st.tuples(st.fixed_dictionaries(required, optional=optional),
                         st.dictionaries(key, json_value, max_size=2)
                         ).map(lambda p: {**p[1], **p[0]})

    # a large summary repeats a drawn string up to ``large_text`` characters: free to draw
    large = st.tuples(st.text(chars, min_size=1, max_size=8),
                      st.integers(large_text // 2, large_text)
                      ).map(lambda p: (p[0] * (p[1] // len(p[0]) + 1))[:p[1]])
    summary = text if large_text == 0 else st.one_of(text, large)
    narrative_entry = st.one_of(
        obj({"session": number, "summary": summary},
            {"date": stamp, "agent": text, "decisions": items(text)}),
        obj({"session": number, "summary": summary}, {}), summary, st.none())
    # a narrative with a large entry is one of the four shapes, not left to chance
    long_narrative = items(narrative_entry) if large_text == 0 else st.lists(
        st.one_of(narrative_entry, obj({"session": number, "summary": large}, {})),
        min_size=1, max_size=max_items)
    domain = obj({}, {"concepts": shaped(items(st.one_of(text, json_value))),
                      "concerns": shaped(items(st.one_of(text, json_value)))})
    trajectory = obj({}, {"current_phase": st.one_of(st.sampled_from(PHASES), text),
                          "completed_phases": items(text), "blockers": items(text),
                          "success_rate": number})
    project_memory = obj({}, {
        # one narrative in four is a string or another odd value: the wrong type
        "narrative": pick(items(narrative_entry), long_narrative, summary, odd),
        "domain": shaped(domain), "trajectory": shaped(trajectory)})
    artifact = shaped(obj({"ref": st.one_of(text, st.none())},
                          {"created_at": stamp, "version": number, "sha256": text}))
    artifact_type = st.one_of(st.sampled_from(_ARTIFACT_TYPES), key)
    artifact_name = st.one_of(st.sampled_from(_ARTIFACT_NAMES), key)
    artifacts = shaped(st.dictionaries(
        artifact_type, shaped(st.dictionaries(artifact_name, artifact, max_size=max_items)),
        max_size=max_items))
    gate = obj({"gate": st.one_of(st.sampled_from(_GATES), text),
                "status": st.one_of(st.sampled_from(["passed", "failed", "pending"]), text)},
               {"timestamp": stamp, "details": json_value})
    tool_call = obj({"tool_name": st.one_of(st.sampled_from(_TOOLS), text)},
                    {"args": st.dictionaries(key, json_value, max_size=max_items),
                     "result": json_value, "timestamp": stamp, "duration_ms": number,
                     "success": st.booleans(), "error": st.one_of(st.none(), text)})
    budget = obj({}, {"max_cost_usd": number, "current_cost_usd": number,
                      "alert_threshold": number, "currency": text,
                      "cost_breakdown": st.dictionaries(key, number, max_size=max_items)})
    metadata = obj({}, {"owner": st.one_of(text, st.none(), number), "description": text,
                        "tags": items(text), "version": number})
    known: dict[str, SearchStrategy[Any]] = {
        "mission_uuid": st.one_of(text, st.none()),
        "phase": st.one_of(st.sampled_from(PHASES), text, st.none()),
        "status": st.one_of(st.sampled_from(STATUSES), text, st.none()),
        "created_at": stamp, "updated_at": stamp, "completed_at": stamp,
        "budget": shaped(budget), "metadata": shaped(metadata),
        "project_memory": shaped(project_memory), "artifacts": artifacts,
        "quality_gates": shaped(st.one_of(items(gate),
                                          st.dictionaries(key, gate, max_size=max_items))),
        "tool_calls": shaped(items(tool_call)),
    }

    @st.composite
    def draw_doc(draw: DrawFn) -> dict[str, Any]:
        doc: dict[str, Any] = {"mission_id": draw(mission_id_strategy())}
        for name, strategy in known.items():
            if draw(st.booleans()):   # False (absent) is what a failure shrinks toward
                doc[name] = draw(strategy)
        for name, value in draw(st.dictionaries(key, json_value, max_size=3)).items():
            doc.setdefault(name, value)   # unknown extra fields; never the mission id
        if draw(st.booleans()):
            depth = draw(st.integers(0, max_depth))
            doc.setdefault(draw(key), _nest(draw(scalar), depth, draw(key)))
        return check_mission(doc)

    return draw_doc()


def _nest(leaf: Any, depth: int, key: str) -> Any:
    """``leaf`` inside ``depth`` alternating arrays and objects (keyed ``key``)."""
    for level in range(depth):
        leaf = [leaf] if level % 2 else {key: leaf}
    return leaf


def _iso(seconds: int) -> str:
    """An ISO 8601 UTC timestamp for ``seconds`` since the epoch, as the mission files hold."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- the plain generator (benchmarks) ----------------------------------------------------------


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(low, high)))


def _mission(rng: random.Random, mission_id: str) -> dict[str, Any]:
    start = rng.randint(1_700_000_000, 1_800_000_000)
    narrative = [{"session": i + 1, "summary": _sentence(rng, 8, 60), "date": _iso(start + i),
                  "agent": rng.choice(_TOOLS), "decisions": [_sentence(rng, 2, 8)
                                                             for _ in range(rng.randint(0, 3))]}
                 for i in range(rng.randint(0, 20))]
    artifacts = {t: {n: {"ref": f"docs/{t}/{n}.md", "version": rng.randint(1, 9),
                         "created_at": _iso(start + rng.randint(0, 9_999))}
                     for n in rng.sample(_ARTIFACT_NAMES, rng.randint(1, 3))}
                 for t in rng.sample(_ARTIFACT_TYPES, rng.randint(0, 4))}
    tool_calls = [{"tool_name": rng.choice(_TOOLS), "args": {"path": f"src/m{rng.randint(0, 99)}"
                                                                     ".py"},
                   "result": rng.choice([None, "ok", {"lines": rng.randint(0, 500)}]),
                   "timestamp": _iso(start + 60 * i), "duration_ms": round(rng.uniform(0, 900), 3),
                   "success": rng.random() < 0.9, "error": None}
                  for i in range(rng.randint(0, 40))]
    doc: dict[str, Any] = {
        "mission_id": mission_id, "mission_uuid": f"{rng.getrandbits(128):032x}",
        "phase": rng.choice(PHASES), "status": rng.choice(STATUSES), "created_at": _iso(start),
        "budget": {"max_cost_usd": rng.choice([10, 25.0, 100]),
                   "current_cost_usd": round(rng.uniform(0, 20), 4), "alert_threshold": 0.8},
        "metadata": {"owner": rng.choice(["steward", "alice", "bob", "ops-team"]),
                     "tags": rng.sample(_WORDS, rng.randint(0, 4)), "version": 2},
        "project_memory": {
            "narrative": narrative,
            "domain": {"concepts": rng.sample(_WORDS, rng.randint(0, 6)),
                       "concerns": [_sentence(rng, 3, 10) for _ in range(rng.randint(0, 4))]},
            "trajectory": {"current_phase": rng.choice(PHASES),
                           "completed_phases": list(PHASES[:rng.randint(0, 4)]),
                           "blockers": [], "success_rate": round(rng.random(), 3)}},
        "artifacts": artifacts,
        "quality_gates": [{"gate": g, "status": rng.choice(["passed", "failed", "pending"]),
                           "timestamp": _iso(start + 3600)}
                          for g in rng.sample(_GATES, rng.randint(0, 5))],
        "tool_calls": tool_calls,
    }
    if rng.random() < 0.1:
        del doc["budget"]   # old sessions wrote no budget
    return doc


def generate_missions(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` realistic mission documents for ``seed`` (same seed, same documents): 0-20
    narrative entries, 0-40 tool calls, up to 4 artifact types; about 2-15 KB of JSON each.
    Ids are ``mission-<seed>-<i>``, unique within the call."""
    if n < 0:
        raise ValueError(f"generate_missions(n={n}): n must be >= 0")
    rng = random.Random(f"missions:{seed}")
    return [_mission(rng, f"mission-{seed}-{i:06d}") for i in range(n)]
