"""The layers hold: apps import library modules, never each other; the library never imports an app."""

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "segpets"
APPS = {"train", "eval", "predict", "export", "report", "bench", "inspect", "audit"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_of(module: str) -> str | None:
    """The app a module belongs to (`segpets.bench.timing` -> bench), None for the library."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in APPS else None


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("segpets.")}


def test_no_module_imports_an_app_other_than_its_own():
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        own = app_of(module)
        for imported in imported_modules(path):
            target = app_of(imported)
            if target is not None and target != own:
                crossings.append(f"{module} imports {imported}")
    assert not crossings, "\n".join(crossings)


def test_the_check_sees_a_crossing(tmp_path):
    fake = tmp_path / "segpets" / "eval.py"
    fake.parent.mkdir()
    fake.write_text("from segpets.train import build_module\nimport segpets.report\n")
    assert imported_modules(fake) == {
        "segpets.train",
        "segpets.train.build_module",
        "segpets.report",
    }
    assert {app_of(name) for name in imported_modules(fake)} == {"train", "report"}
