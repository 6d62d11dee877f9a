from __future__ import annotations

import pytest

from crashgate.backends import (
    BackendMissing,
    BadOption,
    UnknownBackend,
    check_options,
    known_names,
    os_env,
    resolve,
)
from crashgate.backends.options import Option


def test_builtin_names_resolve_lazily_with_options() -> None:
    spec = resolve("sqlite?journal_mode=WAL&synchronous=NORMAL")
    assert spec.name == "sqlite"
    assert dict(spec.options) == {"journal_mode": "WAL", "synchronous": "NORMAL"}
    assert spec.label == "sqlite?journal_mode=WAL&synchronous=NORMAL"
    assert "?" not in spec.slug and "&" not in spec.slug


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownBackend) as err:
        resolve("sqlit")
    assert "Did you mean 'sqlite'" in str(err.value)
    assert "Known backends" in str(err.value)


def test_module_factory_name(tmp_path) -> None:
    spec = resolve("crashgate.reference.memory:open_memory?metric=cosine")
    store = spec.open(str(tmp_path / "s"), os_env())
    assert store.declaration.metric == "cosine"
    store.close()


def test_missing_module_fails_loud_with_install_command() -> None:
    spec = resolve("nosuchpkg_for_crashgate.mod:factory")
    with pytest.raises(BackendMissing) as err:
        spec.factory()
    assert "Run: pip install nosuchpkg_for_crashgate" in str(err.value)
    assert "does not fall back" in str(err.value)


def test_entry_point_backends_are_listed(monkeypatch) -> None:
    import importlib.metadata as md

    from crashgate.backends import registry

    ep = md.EntryPoint("mine", "crashgate.reference.memory:open_memory", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {"mine": ep})
    assert "mine" in known_names()
    assert resolve("mine").target == "crashgate.reference.memory:open_memory"


def test_bad_option_value_and_name_get_suggestions() -> None:
    known = {"journal_mode": Option("WAL", ("WAL", "DELETE"))}
    with pytest.raises(BadOption) as err:
        check_options("sqlite", {"journal_mode": "WALL"}, known)
    assert "Did you mean 'WAL'" in str(err.value)
    with pytest.raises(BadOption) as err:
        check_options("sqlite", {"journal_mod": "WAL"}, known)
    assert "Did you mean 'journal_mode'" in str(err.value)
    assert check_options("sqlite", {"journal_mode": "delete"}, known) == {"journal_mode": "DELETE"}


def test_memory_rejects_unknown_option(tmp_path) -> None:
    with pytest.raises(BadOption):
        resolve("memory?metrc=l2").open(str(tmp_path / "s"), os_env())
