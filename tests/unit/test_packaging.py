"""What the wheel ships: package data found through importlib.resources, extras kept apart."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from switchboard.core.serde import schemas_dir
from switchboard.devtools.local_kafka import DEFAULT_POM

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_package_data_links_are_the_top_level_folders() -> None:
    """The files exist once: the package folders are links to schemas/ and infra/kafka/."""
    assert (REPO / "switchboard/core/schemas").is_symlink()
    assert (REPO / "switchboard/core/schemas").resolve() == REPO / "schemas" == schemas_dir()
    assert (REPO / "switchboard/devtools/kafka").is_symlink()
    assert DEFAULT_POM == REPO / "infra/kafka/pom.xml"


def test_every_schema_file_is_package_data() -> None:
    """A new contract file must ship in the wheel, or codecs there would not know it."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["switchboard.core"]
    files = [p.relative_to(REPO).as_posix() for p in (REPO / "schemas").rglob("*") if p.is_file()]
    assert files
    unshipped = [
        f
        for f in files
        if not any(fnmatch.fnmatch(f, f"schemas/{p.split('/', 1)[1]}") for p in patterns)
    ]
    assert unshipped == []


def test_dev_only_packages_are_extras() -> None:
    # By name: the SDK's own aiohttp transport (``anthropic[aiohttp]``) is a runtime need of the
    # worker; aiohttp itself, for the fake server, and testcontainers are not.
    runtime = {Requirement(d).name for d in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "aiohttp" not in runtime and "testcontainers" not in runtime
    assert any(d.startswith("aiohttp") for d in extras["fake"])
    assert "switchboard[fake]" in extras["dev"]
    assert any(d.startswith("testcontainers") for d in extras["dev"])
