"""Benchmarks against PyTorch (``python -m benchmarks``; see __main__.py)."""
# minitransformer before NumPy: it asks OpenBLAS's idle threads to sleep at once, which
# OpenBLAS reads only when NumPy loads it (see minitransformer/__init__.py).
import minitransformer  # noqa: F401
