"""Layering: one rule per folder, no exceptions.

    switchboard/cli         the composition root: may import every layer
    switchboard/devtools    local broker, fake Anthropic server: the kernel only
    producers/, consumers/  the client library and the pipeline: the kernel only
    switchboard/core        the kernel: nothing of the project above it

Tests and benchmarks sit outside the layers and may import any of them. Every import counts,
module-level or inside a function, and so does a dotted name given to ``import_module``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: The project's own top-level packages: imports of anything else (stdlib, third party) are free.
FIRST_PARTY = ("switchboard", "producers", "consumers")

#: Folder -> the first-party packages its modules may import (itself included).
RULES: dict[str, tuple[str, ...]] = {
    "switchboard/core": ("switchboard.core",),
    "producers": ("producers", "switchboard.core"),
    "consumers": ("consumers", "switchboard.core"),
    "switchboard/devtools": ("switchboard.devtools", "switchboard.core"),
    "switchboard/cli": ("switchboard", "producers", "consumers"),
    "switchboard/console": ("switchboard", "producers", "consumers"),
}


def _imports(path: Path) -> set[str]:
    """Every first-party module ``path`` imports, as dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).parent.parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {m for m in found if m.split(".")[0] in FIRST_PARTY}


def _allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def _files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(RULES))
def test_each_folder_imports_only_the_layers_below_it(folder: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imports(path) if not _allowed(m, RULES[folder])
        )
        for path in _files(folder)
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_every_package_folder_has_a_rule() -> None:
    # A new folder of first-party code must say where it sits.
    folders = {
        str(p.parent.relative_to(REPO))
        for top in FIRST_PARTY
        for p in (REPO / top).rglob("__init__.py")
    }
    unruled = {f for f in folders if not any(f == r or f.startswith(r + "/") for r in RULES)}
    assert unruled == {"switchboard"}  # the namespace holding the three layers, no code of its own
    assert (REPO / "switchboard" / "__init__.py").read_text().count("import") == 0


def test_the_rule_is_checked_on_real_files() -> None:
    # Guard against the test above passing because it found nothing to check.
    assert all(len(_files(folder)) >= 2 for folder in RULES)
    assert "consumers.app" in _imports(REPO / "switchboard" / "cli" / "pipeline_cmds.py")
    assert not _allowed("consumers.app", RULES["switchboard/core"])
    assert not _allowed("switchboard.cli.main", RULES["switchboard/core"])
    assert not _allowed("switchboard.devtools.local_kafka", RULES["consumers"])
