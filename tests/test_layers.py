"""Layers stay apart: the hub never imports the lab, and the CLI loads no server code unless
it runs one (every other command talks to a hub over HTTP)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_hub_never_imports_the_lab() -> None:
    leaks = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n.startswith("aiorch.lab"))
        for path in (ROOT / "aiorch" / "hub").rglob("*.py")
    }
    assert {path: names for path, names in leaks.items() if names} == {}


def test_the_cli_loads_no_server_code() -> None:
    probe = (
        "import sys, aiorch.cli.main\n"
        "print(sorted(m for m in ('aiorch.hub.server', 'aiorch.hub.app', 'uvicorn', 'fastapi')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
