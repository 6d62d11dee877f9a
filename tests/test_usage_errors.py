"""Every user mistake is a usage error: run through the ``crashgate`` command as a subprocess,
each exits 3 with exactly one line on stderr and no traceback, before any work starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# the installed command, as a user runs it: its import path does not hold the current directory
# (``python -m`` would add it)
_SCRIPT = shutil.which("crashgate", path=str(Path(sys.executable).parent))
CRASHGATE = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "crashgate.harness.cli"]

USER_MODULES = {
    "badfactories.py": '''
from crashgate.backends import Capability, Declaration, Durability
from crashgate.reference.memory import open_memory


def raises(path, env, **options):
    raise RuntimeError("the factory fell over")


class _Bare:
    def close(self):
        pass


def no_declaration(path, env, **options):
    return _Bare()


class _Malformed(_Bare):
    declaration = Declaration(durability="power-loss", capabilities=frozenset({"kv"}))


def malformed(path, env, **options):
    return _Malformed()


def wrong_capability(path, env, **options):
    store = _Malformed()
    store.declaration = Declaration(Durability.NONE, frozenset({Capability.KV, "kv-plus"}))
    return store


not_callable = 42
''',
    "breaks_on_import.py": 'raise RuntimeError("this module cannot be imported")\n',
    "needs_missing_dep.py": "import crashgate_no_such_dependency  # noqa\n",
}


@pytest.fixture(scope="module")
def mods(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("usermods")
    for name, text in USER_MODULES.items():
        (root / name).write_text(text)
    (root / "a_file").write_text("not a directory\n")
    (root / "a_dir").mkdir()
    (root / "nan.json").write_text('[{"id": 1, "vector": [NaN, 1.0, 2.0]}]')
    (root / "inf.json").write_text('[{"id": 1, "vector": [Infinity, 1.0, 2.0]}]')
    return root


def _env(pythonpath: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _usage_error(args: list[str], *, cwd: Path, pythonpath: Path | None = None,
                 stdout: int | None = subprocess.PIPE) -> str:
    proc = subprocess.run([*CRASHGATE, *args], cwd=cwd, env=_env(pythonpath), stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == 3, (proc.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    return lines[0]


# (case id, argv with {m} for the modules' directory, what the one line must say)
PATH_MISTAKES = [
    ("store-path-is-a-directory", ["rvf", "status", "{m}/a_dir"], "is a directory"),
    ("store-path-missing-parent", ["rvf", "create", "{m}/no/such/dir/x.rvf", "--dimension", "3"],
     "does not exist"),
    ("store-path-permission-denied", ["rvf", "create", "/sys/crashgate-x.rvf", "--dimension",
                                      "3"], "permission denied"),
    ("out-is-a-file", ["certify", "memory", "--out", "{m}/a_file"], "is a file"),
    ("out-under-a-file", ["certify", "memory", "--out", "{m}/a_file/reports"],
     "cannot write there"),
    ("out-unwritable", ["certify", "memory", "--out", "/sys/crashgate-reports"],
     "cannot write there"),
]

NAME_MISTAKES = [
    ("module-missing", ["certify", "crashgate_no_such_module:open"],
     "(the module is missing)"),
    ("attribute-missing", ["certify", "badfactories:no_such_factory"],
     "has no attribute 'no_such_factory' (the attribute is missing)"),
    ("attribute-not-callable", ["powerloss", "badfactories:not_callable"], "not a callable"),
    ("module-raises-on-import", ["certify", "breaks_on_import:open"],
     "RuntimeError: this module cannot be imported"),
    ("module-dependency-missing", ["certify", "needs_missing_dep:open"],
     "its own import of 'crashgate_no_such_dependency' failed"),
    ("factory-raises", ["certify", "badfactories:raises"], "RuntimeError: the factory fell over"),
    ("factory-raises-powerloss", ["powerloss", "badfactories:raises"], "the factory fell over"),
    ("no-declaration", ["certify", "badfactories:no_declaration"], "has no `declaration`"),
    ("factory-raises-backends", ["backends", "badfactories:raises"], "the factory fell over"),
    ("no-declaration-backends", ["backends", "badfactories:no_declaration"],
     "has no `declaration`"),
    ("malformed-declaration", ["certify", "badfactories:malformed"],
     "durability is 'power-loss', of the wrong type"),
    ("unknown-capability", ["powerloss", "badfactories:wrong_capability"],
     "'kv-plus', not a Capability"),
    ("duplicated-option", ["certify", "sqlite?synchronous=OFF&synchronous=FULL"],
     "'synchronous' is given 2 times"),
    ("dimension-10-to-the-11", ["certify", "rvf?dimension=100000000000"],
     "dimension=100000000000 is not accepted"),
    ("dimension-10-to-the-11-powerloss", ["powerloss", "rvf?dimension=100000000000"],
     "dimension=100000000000 is not accepted"),
    ("unknown-option", ["powerloss", "sqlite?synchronus=OFF"], "Did you mean 'synchronous'"),
    ("bad-option-value", ["certify", "sqlite?journal_mode=WALL"], "Did you mean 'WAL'"),
    ("unknown-backend", ["certify", "sqlit"], "Did you mean 'sqlite'"),
    ("unknown-scenario", ["certify", "memory", "--scenario", "adr032-9"], "is not a row"),
    ("bad-seed", ["certify", "memory", "--seed", "x"], "invalid int value"),
    ("zero-ops", ["powerloss", "memory", "--ops", "0"], "at least 1"),
    ("bad-crash-model", ["powerloss", "memory", "--models", "prefix,sideways"],
     "'sideways' is not a crash model"),
    ("non-finite-vector-nan", ["rvf", "ingest", "{m}/nan.rvf", "--input", "{m}/nan.json"],
     "not a finite number"),
    ("non-finite-vector-inf", ["rvf", "ingest", "{m}/inf.rvf", "--input", "{m}/inf.json"],
     "not a finite number"),
]


@pytest.mark.parametrize(("case", "argv", "says"), PATH_MISTAKES + NAME_MISTAKES,
                         ids=[c[0] for c in PATH_MISTAKES + NAME_MISTAKES])
def test_each_mistake_is_one_line_and_exit_3(case: str, argv: list[str], says: str,
                                             mods: Path, tmp_path: Path) -> None:
    if case.startswith("non-finite"):
        store = argv[2].format(m=mods)
        if not Path(store).exists():
            subprocess.run([*CRASHGATE, "rvf", "create", store, "--dimension", "3"],
                           env=_env(None), check=True, capture_output=True, timeout=120)
    args = [a.format(m=mods) for a in argv]
    line = _usage_error(args, cwd=tmp_path, pythonpath=mods)
    assert says in line, line
    if args[0] == "certify":
        assert not list(tmp_path.rglob("certificate.json"))   # refused before any work


def test_a_module_in_the_current_directory_is_named_with_the_fix(mods: Path) -> None:
    line = _usage_error(["certify", "badfactories:raises"], cwd=mods)
    assert "(the module is missing)" in line, line
    assert f"the current directory {mods} holds 'badfactories' but is not on the import path" \
        in line and "PYTHONPATH=." in line, line


def test_a_module_missing_with_the_current_directory_on_the_path_says_so(mods: Path) -> None:
    line = _usage_error(["powerloss", "crashgate_no_such_module:open"], cwd=mods,
                        pythonpath=Path("."))
    assert f"the current directory {mods} is on the import path" in line, line


@pytest.mark.parametrize("argv", [["backends"], ["certify", "memory", "--scenario", "inv-3",
                                                   "--budget", "quick", "--quiet"]],
                         ids=["backends", "certify"])
def test_a_closed_pipe_is_one_line_not_a_traceback(argv: list[str], tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)   # the reader is gone before the first line (``| head -0``)
    try:
        line = _usage_error([*argv, *(["--out", str(tmp_path)] if argv[0] == "certify"
                                      else [])], cwd=tmp_path, stdout=write)
    finally:
        os.close(write)
    assert "broken pipe" in line, line


def test_help_lists_every_powerloss_default() -> None:
    proc = subprocess.run([*CRASHGATE, "powerloss", "--help"], capture_output=True, text=True,
                          timeout=120, check=True)
    text = " ".join(proc.stdout.split())
    for option in ("--seed", "--ops", "--states", "--profile", "--models", "--state"):
        start = text.index(f"{option} ", text.index("options:"))
        end = min((text.find(f" {o} ", start + len(option)) for o in ("--ops", "--states",
                   "--profile", "--models", "--state ") if text.find(f" {o} ", start + 1) > 0),
                  default=len(text))
        assert "default" in text[start:end], (option, text[start:end])


def test_a_bad_backend_under_pytest_is_one_short_error(mods: Path, tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--crashgate-backend", "badfactories:raises", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(mods))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    assert "Traceback" not in out and "crashgate[" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line or "Error" in line]
    assert len(errors) == 1 and "the factory fell over" in errors[0], out
    assert errors[0].startswith("ERROR: --crashgate-backend badfactories:raises: "), out
