"""Layering: producers/ and consumers/ never import each other; the shared core imports neither
(only its CLI, the composition root, wires them together)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _files(package: str, *, exclude: str | None = None) -> list[Path]:
    files = sorted((REPO / package).rglob("*.py"))
    return [f for f in files if exclude is None or exclude not in f.parts]


@pytest.mark.parametrize(
    ("package", "forbidden", "exclude"),
    [
        ("producers", {"consumers"}, None),
        ("consumers", {"producers"}, None),
        ("switchboard", {"producers", "consumers"}, "cli"),
    ],
)
def test_layers(package: str, forbidden: set[str], exclude: str | None) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & forbidden)
        for path in _files(package, exclude=exclude)
        if _imports(path) & forbidden
    }
    assert offenders == {}


def test_the_rule_is_checked_on_real_files() -> None:
    # Guard against the test above passing because it found nothing to check.
    assert len(_files("consumers")) > 10 and len(_files("switchboard", exclude="cli")) > 10
    assert "consumers" in _imports(REPO / "switchboard" / "cli" / "pipeline_cmds.py")
