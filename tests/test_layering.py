"""core and flows import nothing above them (DESIGN.md, "Layout and dependency direction")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "core": {"flows", "bot", "api", "amparo"},
    "flows": {"bot", "api", "amparo"},
    "bot": {"api", "amparo"},
    "api": {"flows", "bot", "amparo"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_it_keeps_the_dependency_direction(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_it_sees_an_import_that_breaks_the_rule(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import api.app\nfrom bot import telegram\nfrom .x import y\n")
    assert imported_packages(module) == {"api", "bot"}
