"""Engine overhead: an op on 1-element tensors against raw NumPy, and a 10,000-op backward.

    python -m benchmarks.bench_autograd
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import minitransformer as mt


def _median_time(fn, repeat, number):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def run(repeat: int = 7, number: int = 20000) -> dict:
    a_np, b_np = np.ones(1, np.float32), np.ones(1, np.float32)
    a, b = mt.tensor(a_np, requires_grad=True), mt.tensor(b_np, requires_grad=True)
    c, d = mt.tensor(a_np), mt.tensor(b_np)
    numpy_add = _median_time(lambda: a_np + b_np, repeat, number)
    engine_add = _median_time(lambda: a + b, repeat, number)
    engine_add_nograd = _median_time(lambda: c + d, repeat, number)

    def chain():
        x = mt.tensor(np.ones(1), requires_grad=True)
        y = x
        for _ in range(10_000):
            y = y * 1.0001
        return y

    forward = _median_time(chain, 3, 1)
    backward_times = []
    for _ in range(3):
        y = chain()
        start = time.perf_counter()
        y.backward()
        backward_times.append(time.perf_counter() - start)
    return {
        "numpy_add_us": numpy_add * 1e6,
        "engine_add_us": engine_add * 1e6,
        "engine_add_no_grad_us": engine_add_nograd * 1e6,
        "overhead_ratio": engine_add / numpy_add,
        "chain_10000_forward_ms": forward * 1e3,
        "chain_10000_backward_ms": statistics.median(backward_times) * 1e3,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    res = run(repeat=3 if args.quick else 7, number=2000 if args.quick else 20000)
    print("| measure | value |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
