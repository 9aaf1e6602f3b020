"""The layout's one rule, checked on every import: product <- tools <- tests, never the other way.

product: gru_encoder (imports only itself), handlers and training (import gru_encoder);
tools: loadtests, then reliability (which may use loadtests); tests: anything. Nothing imports tests.
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


def imported_folders(path: Path) -> set[str]:
    """Top-level folders of this project that a file imports (absolute imports, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & OURS
    return found


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
