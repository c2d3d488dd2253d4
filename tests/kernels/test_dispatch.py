"""The registry hands the functional ops these kernels, and "reference" turns them off."""
import sys

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import attention, cross_entropy, dispatch, softmax

NAMES = {
    "softmax_forward": softmax, "softmax_backward": softmax,
    "cross_entropy_forward": cross_entropy, "cross_entropy_backward": cross_entropy,
    "attention_forward": attention, "attention_backward": attention,
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_cpu_kernels_are_registered(name):
    x = np.zeros(3, np.float32)
    assert kernels.get(name, x) is getattr(NAMES[name], name)
    with kernels.using("reference"):
        assert kernels.get(name, x) is None


def test_reference_mode_never_calls_a_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran in reference mode")

    monkeypatch.setattr(attention, "attention_forward", refuse)
    monkeypatch.setattr(softmax, "softmax_forward", refuse)
    q = mt.tensor(np.ones((1, 1, 3, 4)), requires_grad=True)
    with kernels.using("reference"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    with pytest.raises(AssertionError, match="reference mode"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True)


def test_same_graph_either_way():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8))
    grads = []
    for mode in ("reference", "auto"):
        with kernels.using(mode):
            t = mt.tensor(x, requires_grad=True)
            y = F.softmax(t * 2.0)
            (y * y).sum().backward()
            grads.append(t.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_the_table_names_only_modules_that_exist_and_define_the_kernel():
    # CUDA modules import without a GPU (numba.cuda is bound when a kernel is first built).
    for name, modules in dispatch._TABLE.items():
        for device, module in zip(("cpu", "cuda"), modules):
            if module is not None:
                assert callable(getattr(dispatch._module_for(name, device), name)), (name, device)


def test_every_op_has_a_kernel_on_both_devices():
    # With mt.kernels.use("numba") on CuPy arrays, no op may find its CUDA kernel missing.
    missing = [(name, device) for name, modules in dispatch._TABLE.items()
               for device, module in zip(("cpu", "cuda"), modules) if module is None]
    assert missing == [], f"ops without a kernel: {missing}"
    for name in dispatch._TABLE:
        cuda_module = dispatch._module_for(name, "cuda")
        assert cuda_module.__name__.split(".")[-1].startswith("cuda_"), name


@pytest.fixture
def broken_kernel(tmp_path, monkeypatch):
    """A kernel module ``broken_kernel`` whose import fails, listed in the table for the CPU."""
    (tmp_path / "broken_kernel.py").write_text("import a_module_that_is_not_installed\n")
    monkeypatch.setattr(kernels, "__path__", [*kernels.__path__, str(tmp_path)])
    monkeypatch.setitem(dispatch._TABLE, "broken_forward", ("broken_kernel", None))
    dispatch._module_for.cache_clear()
    yield "broken_forward"
    sys.modules.pop(f"{kernels.__name__}.broken_kernel", None)
    dispatch._module_for.cache_clear()


@pytest.mark.parametrize("mode", ["auto", "numba"])
def test_a_kernel_module_that_fails_to_import_raises_instead_of_falling_back(broken_kernel, mode):
    x = np.zeros(3, np.float32)
    with kernels.using(mode), pytest.raises(ModuleNotFoundError, match="a_module_that_is_not_installed"):
        kernels.get(broken_kernel, x)
    with kernels.using("reference"):
        assert kernels.get(broken_kernel, x) is None       # the reference never imports it
