"""Attention forward + backward through the kernel needs memory linear in T, not T^2."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_attention_peak_memory_grows_with_t_not_t_squared():
    # A fresh process, so that the peak RSS measures this computation and nothing before it.
    result = subprocess.run([sys.executable, "-m", "tests.kernels.memory_check", "8192"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    growth = float(re.search(r"peak RSS growth (-?[\d.]+) MB", result.stdout).group(1))
    # A single 8192 x 8192 float32 score matrix would be 256 MB.
    assert growth < 64.0, result.stdout
