"""The import rules of ARCHITECTURE.md, checked with import-linter (contracts in pyproject.toml).

``lint-imports`` must pass on the package as it is, and must fail, naming the offending import, on a copy of the
package with one deliberately wrong import (an env importing learning code; a collector importing a runner).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(src), "PATH": str(LINT.parent), "LC_ALL": "C.UTF-8"}
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], capture_output=True, text=True, env=env,
                          cwd=src.parent, timeout=300)  # fmt: skip


def test_the_package_keeps_its_import_contracts():
    r = _lint(ROOT / "src", ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("envs/metaworld/tasks.py", "import rlvla.policies.config", "envs import no learning code"),
        ("collectors/rollout.py", "import rlvla.runners.train", "layers"),
        ("algos/core.py", "import rlvla.collectors", "layers"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, contract):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "rlvla", src / "rlvla", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = src / "rlvla" / module
    path.write_text(path.read_text() + f"\n{line}  # deliberately wrong\n")
    r = _lint(src, tmp_path / "pyproject.toml")
    assert r.returncode != 0, r.stdout[-3000:]
    assert f"{contract}" in r.stdout and "BROKEN" in r.stdout, r.stdout[-3000:]
    wrong = "rlvla." + module.removesuffix(".py").replace("/", ".")
    assert wrong in r.stdout, r.stdout[-3000:]


def test_no_function_is_longer_than_60_lines():
    """Long functions hide several jobs; each of ours fits on a screen (docstring included)."""
    import ast

    long = []
    for path in sorted((ROOT / "src" / "rlvla").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "functions over 60 lines: " + "; ".join(long)
