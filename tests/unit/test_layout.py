"""The layout's one rule, checked on every import: product <- tools <- tests, never the other way.

product: gru_encoder (imports only itself), handlers and training (import gru_encoder);
tools: loadtests, then reliability (which may use loadtests); tests: anything. Nothing imports tests.
Inside gru_encoder, its floors: core <- api <- host, and the client on api alone (numpy and requests).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import ROOT

# What each top-level folder may import from the others (the standard library and packages are free).
ALLOWED = {
    "gru_encoder": set(),
    "handlers": {"gru_encoder"},
    "training": {"gru_encoder"},
    "loadtests": {"gru_encoder", "training"},  # the held-out texts come from training's data split
    "reliability": {"gru_encoder", "loadtests"},
    "docker": {"gru_encoder"},  # the container's health check uses the contract
    "deploy": set(),  # the Kubernetes manifests' validation: packages only
}
OURS = set(ALLOWED) | {"tests"}


# gru_encoder's floors: what each may import of the others (the package's __init__ imports none).
FLOORS = {
    "core": set(),
    "api": {"core"},
    "host": {"api", "core"},
    "client": {"api"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute imports, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= set(names)
    return found


def imported_folders(path: Path) -> set[str]:
    """Top-level folders of this project that a file imports."""
    return {name.split(".")[0] for name in imported_modules(path)} & OURS


def floor_of(path_or_module: str) -> str | None:
    """gru_encoder's floor of a file path relative to the package, or of a dotted module name."""
    parts = path_or_module.replace("/", ".").removesuffix(".py").split(".")
    if parts[0] == "gru_encoder":
        parts = parts[1:]
    if not parts or parts[0] == "__init__":
        return None
    return parts[0] if parts[0] in FLOORS else None


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_run_one_way(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder}/ has no Python files"
    wrong = {str(f.relative_to(ROOT)): sorted(imported_folders(f) - ALLOWED[folder] - {folder}) for f in files}
    assert not {f: w for f, w in wrong.items() if w}, "imports against product <- tools <- tests"


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tests.fakes import FakeContext\n    import loadtests.workload\n")
    assert imported_folders(bad) == {"tests", "loadtests"}


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_the_package_floors_import_downwards(floor: str) -> None:
    package = ROOT / "gru_encoder"
    files = sorted((package / floor).rglob("*.py")) if (package / floor).is_dir() else [package / f"{floor}.py"]
    assert files, f"gru_encoder/{floor} has no Python files"
    wrong = {}
    for f in files:
        floors = {floor_of(m) for m in imported_modules(f) if m.startswith("gru_encoder.")} - {None, floor}
        if floors - FLOORS[floor]:
            wrong[str(f.relative_to(ROOT))] = sorted(floors - FLOORS[floor])
    assert not wrong, f"gru_encoder/{floor} imports a floor it may not (allowed: {sorted(FLOORS[floor])})"


def test_every_module_of_the_package_is_on_a_floor() -> None:
    package = ROOT / "gru_encoder"
    loose = [str(f.relative_to(package)) for f in package.rglob("*.py") if f.name != "__init__.py" and floor_of(str(f.relative_to(package))) is None]
    assert not loose, f"modules outside the floors {sorted(FLOORS)}"


def test_the_floor_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from gru_encoder.host.settings import ServingSettings\n")
    floors = {floor_of(m) for m in imported_modules(bad)}
    assert floors == {"host"} and "host" not in FLOORS["api"]
