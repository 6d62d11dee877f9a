from __future__ import annotations

import importlib.util
import shutil

from crashgate.harness.cli import main


def test_backends_lists_every_builtin_with_its_declaration(capsys) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]
            if line and not line.startswith(" ")}
    # the Postgres backends need the postgres extra: without it they are listed unavailable
    postgres = ("power-loss" if importlib.util.find_spec("pgserver")
                and importlib.util.find_spec("psycopg") else "unavailable")
    # the real npm packages need node and npm (and the registry, once, for their install)
    node = "power-loss" if shutil.which("node") and shutil.which("npm") else "unavailable"
    assert rows == {"json": "power-loss", "memory": "none", "rvf": "power-loss",
                    "rvlite": "power-loss", "sqlite": "power-loss",
                    **{f"stage{n}": "power-loss" for n in range(5)},
                    **{f"arch-phase{n}": "power-loss" for n in range(1, 5)},
                    "agentdb": "power-loss", "pattern-proxy": "power-loss",
                    "pgvector": postgres, **{f"pg-stage{n}": postgres for n in (1, 2, 3)},
                    "rvf-ruvector": "power-loss", "rvf-node": node, "rvf-sdk": node}


def test_backends_with_options_shows_what_they_change(capsys) -> None:
    assert main(["backends", "sqlite?synchronous=OFF", "sqlite?journal_mode=MEMORY"]) == 0
    out = capsys.readouterr().out
    assert "sqlite?synchronous=OFF      process-crash" in out
    assert "sqlite?journal_mode=MEMORY  none" in out


def test_usage_errors_exit_3(capsys) -> None:
    assert main(["backends", "memory?metric=cosin"]) == 3
    assert "Did you mean 'cosine'" in capsys.readouterr().err
    assert main([]) == 3


def test_certify_jobs_reaches_the_crash_state_rows(tmp_path, monkeypatch, capsys) -> None:
    import pytest

    from crashgate.scenarios import procedures_crash

    with pytest.raises(SystemExit) as exit_:
        main(["certify", "json", "--jobs", "0"])
    assert exit_.value.code == 3
    assert "argument --jobs: '0' is not a number of worker processes" in capsys.readouterr().err
    real, asked = procedures_crash.run_powerloss, []

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs.get("jobs"))
        return real(*args, **kwargs)

    monkeypatch.setattr(procedures_crash, "run_powerloss", spy)
    code = main(["certify", "json", "--scenario", "adr032-1", "--budget", "quick", "--seed",
                 "5", "--jobs", "2", "--out", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr()
    assert asked == [2]
