"""Fast paths for the fused ops: Numba kernels on the CPU and on CUDA.

Every kernel here takes arrays and returns arrays (never Tensors); its plain reference is
the autograd op in ``minitransformer.functional``, and the tests compare the two.

Which implementation runs is chosen per call by the functional ops:

    mt.kernels.use("auto")       # default: the kernel for the array's device if there is one
    mt.kernels.use("reference")  # always the plain array code (the textbook path)
    mt.kernels.use("numba")      # always the kernel; an error if the device has none
    with mt.kernels.using("reference"): ...

A kernel is looked up by name and device with ``get(name, array)``; the lookup imports the
kernel module lazily, so importing the package never compiles anything.

The CPU's matrix products have their own fast path, ``blas.gemm`` (MKL where installed,
NumPy's matmul as the reference); the linear ops call it directly. So does the autograd
``Add`` op the threaded ``elementwise.add``, for two large arrays of one shape (a residual
connection's sum; anything that broadcasts is NumPy's).
"""
# --- Imported under the wrong name? Hand over to the real top-level ``kernels``. ---------
#
# This folder sits at the repository root and installs as ``minitransformer.kernels``. But
# any process that has the repository root on ``sys.path`` (pytest inserting its rootdir,
# ``python -m ...`` or ``python -c`` or a REPL started there, a notebook opened there) can
# also reach it as a top-level package named ``kernels``: the name of a PyPI distribution
# that ``transformers`` depends on and imports when a model class loads. Python searches
# the root first, so without the block below ``import kernels`` would run *this* file and
# give ``transformers`` our kernels in place of its dependency.
#
# No layout or setting can keep a sys.path entry from being searched, so the guard lives
# in the one file every such import executes. Run as ``kernels``, this module looks the
# name up again on sys.path without the repository root and puts what it finds (the
# installed distribution) in ``sys.modules["kernels"]``; the import machinery hands the
# importer whatever ``sys.modules`` holds once this file finishes, so the importer gets the
# real package and, through its ``__path__``, the real submodules. When nothing else is
# installed under that name, it leaves an empty namespace package instead: what Python
# makes of any folder without ``__init__.py``, so ``from kernels import x`` fails as it
# would for a stray folder, and ``transformers`` (which imports a package that has no
# distribution metadata to read its version) sees no ``__file__`` or ``__version__`` and
# treats the package as absent. Under its own name, ``minitransformer.kernels``, none of
# this runs. tests/kernels/test_top_level_name.py starts interpreters both ways.
if __name__ == "kernels":
    def _hand_over() -> None:
        import importlib.machinery
        import importlib.util
        import os
        import sys

        root = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        others = [p for p in sys.path if os.path.realpath(os.path.abspath(p or os.curdir)) != root]
        spec = importlib.machinery.PathFinder.find_spec("kernels", others)
        if spec is None or spec.loader is None:
            spec = importlib.machinery.ModuleSpec("kernels", None, is_package=True)
            spec.submodule_search_locations = []
        real = importlib.util.module_from_spec(spec)
        sys.modules["kernels"] = real
        if spec.loader is not None:
            try:
                spec.loader.exec_module(real)
            except BaseException:
                sys.modules.pop("kernels", None)
                raise

    _hand_over()
else:
    from .dispatch import MODES, get, mode, use, using  # noqa: F401  (the public interface)
