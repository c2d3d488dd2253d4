"""Compiled kernels are cached on disk: a second process loads them instead of recompiling."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = """
import json
import numpy as np
from minitransformer.kernels import attention, cross_entropy, softmax
for dtype in (np.float32, np.float64):
    x = np.ones((2, 3), dtype)
    y = softmax.softmax_forward(x)
    softmax.softmax_backward(y, x)
    losses, lse = cross_entropy.cross_entropy_forward(x, np.array([0, 2]))
    cross_entropy.cross_entropy_backward(x, np.array([0, 2]), lse, np.ones(2, dtype))
    q = np.ones((1, 1, 3, 4), dtype)
    o, lse = attention.attention_forward(q, q, q, causal=True)
    attention.attention_backward(q, q, q, o, lse, q, causal=True)
kernels = [softmax._softmax_forward, softmax._softmax_backward,
           cross_entropy._cross_entropy_forward, cross_entropy._cross_entropy_backward,
           attention._forward, attention._backward, attention._row_dots,
           attention._pack_transposed]
print(json.dumps({k.__name__: [sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())]
                  for k in kernels}))
"""


def _run():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_kernels_from_the_cache():
    stats = _run()
    if any(misses for _, misses in stats.values()):
        stats = _run()                   # the first run compiled what nothing had cached yet
    for name, (hits, misses) in stats.items():
        assert misses == 0 and hits == 2, f"{name}: {hits} cache hits, {misses} misses"
