"""Peak memory of attention forward + backward at a long sequence, printed in MB.

Run as ``python -m tests.kernels.memory_check [T]`` in a fresh process (see
``test_attention_memory.py``). Measures the growth of the process's peak resident set
(``ru_maxrss``) across one forward and backward pass of one head, D = 64, T = 8192, after
the inputs exist and after a warm-up on a tiny shape has compiled (or loaded) the kernels.
tracemalloc cannot be used: Numba's allocations bypass Python's allocator.
"""
from __future__ import annotations

import resource
import sys

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def main() -> int:
    import minitransformer as mt
    import minitransformer.functional as F

    t = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
    rng = np.random.default_rng(0)

    def step(q, k, v, do):
        ts = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = F.scaled_dot_product_attention(*ts)
        out.backward(do)
        return [x.grad for x in ts]

    small = [rng.standard_normal((1, 1, 70, 64)).astype(np.float32) for _ in range(4)]
    step(*small)                                              # compile or load the kernels
    q, k, v, do = (rng.standard_normal((1, 1, t, 64)).astype(np.float32) for _ in range(4))
    before = peak_mb()
    grads = step(q, k, v, do)
    after = peak_mb()
    assert all(np.isfinite(g).all() for g in grads)
    print(f"T={t} peak RSS growth {after - before:.1f} MB (a T x T float32 matrix is "
          f"{t * t * 4 / 2**20:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
