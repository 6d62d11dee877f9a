from __future__ import annotations

from crashgate.harness.cli import main


def test_backends_lists_every_builtin_with_its_declaration(capsys) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]
            if line and not line.startswith(" ")}
    assert rows == {"json": "power-loss", "memory": "none", "rvf": "power-loss",
                    "rvlite": "power-loss", "sqlite": "power-loss"}


def test_backends_with_options_shows_what_they_change(capsys) -> None:
    assert main(["backends", "sqlite?synchronous=OFF", "sqlite?journal_mode=MEMORY"]) == 0
    out = capsys.readouterr().out
    assert "sqlite?synchronous=OFF      process-crash" in out
    assert "sqlite?journal_mode=MEMORY  none" in out


def test_usage_errors_exit_3(capsys) -> None:
    assert main(["backends", "memory?metric=cosin"]) == 3
    assert "Did you mean 'cosine'" in capsys.readouterr().err
    assert main([]) == 3
