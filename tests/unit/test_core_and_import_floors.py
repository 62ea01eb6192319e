"""The core floor: run-file records, atomic writes' file mode, versions; imports run one way only."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from core.atomic import _umask, atomic_write_text
from core.runfiles import append_jsonl, read_jsonl, truncate_jsonl
from core.versions import versions

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (at module level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _importers(folder: str, packages: tuple[str, ...]) -> list[str]:
    """``file: module`` for each import in ``folder`` of one of ``packages`` (the package or a module in it)."""
    return sorted(
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / folder).rglob("*.py")
        for m in _imports(p)
        if m in packages or m.startswith(tuple(f"{q}." for q in packages))
    )


# The floors, lowest first; a package imports only from floors below it (README, "Development", the layout):
# core -> model_zoo -> engines -> networks -> editing -> training | app -> distill (the entry point).
# The pipeline (training) and the service (app) stand side by side: neither imports the other.


def test_imports_run_downward():
    assert (
        _importers("core", ("model_zoo", "engines", "networks", "editing", "training", "app", "distill"))
        == []
    )
    assert _importers("model_zoo", ("engines", "networks", "editing", "training", "app", "distill")) == []
    assert _importers("engines", ("networks", "editing", "training", "app", "distill")) == []
    assert _importers("networks", ("editing", "training", "app", "distill")) == []
    assert _importers("editing", ("training", "app", "distill")) == []
    assert _importers("training", ("app", "distill")) == []
    assert _importers("app", ("distill",)) == []
    assert not {m for m in _imports(ROOT / "training" / "directions.py") if m.startswith("training.filters")}


def test_the_service_imports_no_training():
    """The serving image copies no training/: no module of app/ imports it, at module level or in a function."""
    assert _importers("app", ("training",)) == []


def test_the_import_check_sees_what_it_must():
    """The checks above would pass on a typo'd folder or a prefix that never matches; they must not."""
    for folder in ("core", "model_zoo", "engines", "networks", "editing", "training", "app", "distill"):
        assert (ROOT / folder / "__init__.py").is_file(), folder
    assert _importers("app", ("engines",)) != []  # app does import engines: the check finds real imports
    assert _importers("training", ("engines",)) != []
    assert _importers("training", ("networks",)) != []
    assert _importers("app", ("editing",)) != []
    # a lazy import (inside a function) is seen: app/legacy.py loads the teacher only in the projection process
    legacy = ast.parse((ROOT / "app" / "legacy.py").read_text(encoding="utf-8"))
    lazy = {
        n.module
        for f in ast.walk(legacy)
        if isinstance(f, ast.FunctionDef)
        for n in ast.walk(f)
        if isinstance(n, ast.ImportFrom)
    }
    assert "networks.stylegan2" in lazy and "networks.stylegan2" in _imports(ROOT / "app" / "legacy.py")


def test_a_torn_last_line_is_skipped_and_truncation_keeps_the_rest(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_jsonl(path, {"step": step})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"step": 4, "lo')  # a writer killed mid-line
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    truncate_jsonl(path, lambda row: row["step"] <= 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    truncate_jsonl(tmp_path / "absent.jsonl", lambda row: True)
    assert not (tmp_path / "absent.jsonl").exists()


def test_atomic_writes_follow_the_umask_without_changing_it(tmp_path):
    before = os.umask(0o022)
    try:
        _umask.cache_clear()
        path = atomic_write_text(tmp_path / "a.txt", "x")
        assert path.stat().st_mode & 0o777 == 0o644 and _umask() == 0o022
    finally:
        os.umask(before)
        _umask.cache_clear()


def test_versions_names_python_the_modules_and_this_package():
    v = versions("numpy")
    assert list(v) == ["python", "numpy", "distill"] and v["numpy"][0].isdigit()
