"""What ships: every import declared, and an image that carries no secrets and can write."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement


def _imports(root: Path) -> set[str]:
    """Top-level modules imported anywhere under `root`."""
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.partition(".")[0])
    return found


def _declared(repo_root: Path, *extras: str) -> set[str]:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


@pytest.mark.parametrize(("package", "extras"), [("gateway", ()), ("sources", ("tryton",))])
def test_every_third_party_import_is_declared(
    repo_root: Path, package: str, extras: tuple[str, ...]
) -> None:
    distributions = packages_distributions()
    ours = {"gateway", "sources", "tests"}
    third_party = {
        name
        for name in _imports(repo_root / package) - ours
        if name not in sys.stdlib_module_names and name != "__future__"
    }
    declared = _declared(repo_root, *extras)
    missing = {
        name: distributions.get(name, [name])
        for name in third_party
        if not {d.lower().replace("_", "-") for d in distributions.get(name, [name])} & declared
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_image_ignores_local_environments_keys_and_databases(repo_root: Path) -> None:
    ignored = (repo_root / ".dockerignore").read_text().split()
    for pattern in (".venv", ".gatehouse-demo", ".git", "*.db", "*.pem", "*.env"):
        assert pattern in ignored, pattern


def test_image_database_on_a_volume_its_user_owns(repo_root: Path) -> None:
    dockerfile = (repo_root / "Dockerfile").read_text()
    url = re.search(r"GATEHOUSE_DATABASE_URL=sqlite\+aiosqlite:///(/\S+)/gatehouse\.db", dockerfile)
    assert url, "the image must say where its database lives"
    directory = url.group(1)
    assert f"VOLUME {directory}" in dockerfile
    assert f"chown gatehouse {directory}" in dockerfile


def test_every_install_takes_the_tested_versions(repo_root: Path) -> None:
    pinned = {
        Requirement(line).name.lower().replace("_", "-")
        for line in (repo_root / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert _declared(repo_root, "tryton", "test") - {"gatehouse"} <= pinned
    for path in ("README.md", "Dockerfile", "tests/run.sh"):
        installs = re.findall(r"pip install[^\n]*", (repo_root / path).read_text())
        assert installs, path
        assert all("-c constraints.txt" in line for line in installs), (path, installs)


def test_runtime_dependencies_have_compatible_ranges(repo_root: Path) -> None:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    unbounded = [
        r
        for r in project["dependencies"]
        if not any(s.operator == "<" for s in Requirement(r).specifier)
    ]
    assert not unbounded, unbounded
