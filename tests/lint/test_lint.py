"""The lint gate, run as part of the suite so CI's one command covers it: ruff (pyflakes'
F rules, pycodestyle's E and W with a 120-character line) and vulture (dead code at
confidence 100, with a whitelist for what it cannot see used). Both read pyproject.toml."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name):
    if shutil.which(name, path=str(Path(sys.executable).parent)) is None and shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: it is part of the dev extra (pip install -e \".[dev]\")")


def test_ruff_finds_nothing():
    _tool("ruff")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_vulture_finds_no_dead_code():
    _tool("vulture")
    out = subprocess.run([sys.executable, "-m", "vulture"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_the_gate_can_fail(tmp_path):
    """Each tool, pointed at a file with the mistake it exists to catch, reports it."""
    _tool("ruff")
    _tool("vulture")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return 1\n    print('never')\n" + "x = 1  # " + "y" * 130 + "\n")
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
                           str(ROOT / "pyproject.toml"), str(bad)], capture_output=True, text=True)
    assert "F401" in ruff.stdout and "E501" in ruff.stdout
    vulture = subprocess.run([sys.executable, "-m", "vulture", "--min-confidence", "100", str(bad)],
                             capture_output=True, text=True)
    assert "unreachable code after 'return'" in vulture.stdout
