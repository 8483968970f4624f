"""The house's shape, checked on every run: one direction of dependency between the layers.

The contract lives in pyproject.toml ([tool.importlinter]): ledger/twins → telemetry →
simulation → policy → aiw → opstwin_site → demo, each importing only those below it (tests may
use any layer's fixtures). The one upward hand-off, detection handing anomalies to the policy
layer, goes by Celery task name (``telemetry.handoff``), never by import.

import-linter runs in a child process: its contract classes are inspected with ``dir()``,
which trips over zope.interface's class descriptors once the test process imported Twisted.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["twins", "telemetry", "simulation", "policy", "aiw", "opstwin_site", "demo"]
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def lint(root: Path) -> subprocess.CompletedProcess:
    """Run the project's contract on the packages under ``root``."""
    return subprocess.run([sys.executable, "-c", LINT, str(root / "pyproject.toml")], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_no_app_imports_a_layer_above_it():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_breaks_when_a_lower_layer_imports_a_higher_one(tmp_path):
    """GIVEN a copy of the house where twins imports policy, THEN the same contract fails,
    naming the import."""
    for name in LAYERS:
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("templates", "static", "__pycache__",
                                                      "*.json", "*.html"))
    (tmp_path / "twins" / "upward.py").write_text("from policy import services  # noqa\n")
    contract = (ROOT / "pyproject.toml").read_text().split("\n[tool.importlinter]\n", 1)[1]
    (tmp_path / "pyproject.toml").write_text("[tool.importlinter]\n" + contract)
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    assert "twins.upward -> policy.services" in result.stdout
