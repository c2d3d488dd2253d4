"""The graph and backward(): order, accumulation, reuse, freeing, modes, dtypes, errors."""
import time

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.testing import assert_close


def leaf(values, dtype=np.float64):
    return mt.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


def test_reused_intermediate_and_diamond_give_exact_gradients():
    a = leaf([1.0, -2.0, 3.0])
    b = a + a            # b = 2a
    c = b * b            # c = 4a^2 -> dc/da = 8a
    c.sum().backward()
    assert_close(a.grad, 8 * a.data)

    x = leaf([0.5, 1.5])
    left, right = x.exp(), x * 3.0      # diamond: two paths from x to y
    (left * right).sum().backward()     # d/dx (3x e^x) = 3 e^x (1 + x)
    assert_close(x.grad, 3 * np.exp(x.data) * (1 + x.data), rtol=1e-12)


def test_b_plus_b_plus_b_reuse_of_a_node():
    a = leaf([2.0])
    b = a * a
    c = b + b + b        # 3 a^2
    c.backward()
    assert_close(a.grad, [12.0])


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    w = leaf([1.0, 2.0])
    for _ in range(3):
        (w * w).sum().backward()
    assert_close(w.grad, 3 * 2 * w.data)
    w.zero_grad()
    assert w.grad is None


def test_deep_chain_has_no_recursion_limit():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    start = time.perf_counter()
    y.backward()
    assert time.perf_counter() - start >= 0     # (the figure is reported by the benchmark)
    assert_close(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_second_backward_needs_retain_graph():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    y.backward()
    assert_close(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_no_grad_and_detach_record_nothing():
    x = leaf([1.0])
    with mt.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    z = (x * 2).detach()
    assert not z.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        z.backward()

    @mt.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad


def test_backward_on_non_scalar_needs_a_gradient():
    x = leaf([[1.0, 2.0]])
    y = x * 2
    with pytest.raises(RuntimeError, match=r"shape \(1, 2\).*pass grad="):
        y.backward()
    y.backward(np.array([[1.0, 10.0]]))
    assert_close(x.grad, [[2.0, 20.0]])


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point.*int64"):
        mt.tensor([1, 2, 3], requires_grad=True)


def test_dtype_rules():
    assert mt.tensor([1.0, 2.0]).dtype == np.float32           # lists of floats
    assert mt.tensor(3.0).dtype == np.float32
    assert mt.tensor([1, 2]).dtype == np.int64                 # ints
    assert mt.tensor(np.zeros(2)).dtype == np.float64          # arrays keep theirs
    assert mt.tensor(np.zeros(2, np.float16)).dtype == np.float16
    assert mt.tensor([1, 2], dtype="float64").dtype == np.float64
    x = mt.tensor(np.ones(3, np.float32), requires_grad=True)
    (x * 2.5).sum().backward()                                 # Python scalars keep float32
    assert x.grad.dtype == np.float32


def test_mixed_dtype_gradient_follows_its_input():
    a = mt.tensor(np.ones(2, np.float32), requires_grad=True)
    b = mt.tensor(np.ones(2, np.float64), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_item_numpy_repr_and_device():
    x = mt.tensor(np.array([[1.5]]))
    assert x.item() == 1.5 and isinstance(x.numpy(), np.ndarray) and x.device == "cpu"
    assert "tensor(" in repr(x)
    with pytest.raises(ValueError, match="only one-element"):
        mt.tensor([1.0, 2.0]).item()


def test_cuda_without_cupy_is_a_clear_error():
    if mt.backend.has_cuda():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="needs CuPy and a CUDA GPU"):
        mt.tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match="needs CuPy"):
        mt.tensor([1.0]).to("cuda")


def test_shape_errors_name_both_shapes():
    a, b = mt.tensor(np.ones((2, 3))), mt.tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\) do not broadcast"):
        a + b
    with pytest.raises(ValueError, match=r"\(2, 3\).*into shape \(7,\)"):
        a.reshape(7)


def test_gradcheck_refuses_float32_and_says_why():
    x = mt.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64.*rounding"):
        mt.gradcheck(lambda t: t * 2, (x,))


def test_custom_function_is_a_first_class_op():
    class Softplus(mt.Function):
        """y = log(1 + e^x).   dx = g * sigmoid(x)."""

        @staticmethod
        def forward(ctx, x):
            ctx.save(x=x)
            return np.log1p(np.exp(x))

        @staticmethod
        def backward(ctx, g):
            return g / (1 + np.exp(-ctx.x))

    x = leaf(np.linspace(-2, 2, 7))
    assert mt.gradcheck(lambda t: Softplus.apply(t) * t, (x,))


def test_custom_function_with_wrong_gradient_count_is_named():
    class Bad(mt.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(RuntimeError, match="Bad.backward returned 1 gradients for 2 inputs"):
        Bad.apply(leaf([1.0]), leaf([2.0])).backward()


def test_retain_grad_keeps_an_intermediate_gradient():
    x = leaf([1.0, 2.0])
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    assert_close(h.grad, 2 * h.data)


def test_getitem_with_repeated_indices_scatter_adds():
    x = leaf([1.0, 2.0, 3.0])
    x[np.array([0, 0, 2])].sum().backward()
    assert_close(x.grad, [2.0, 0.0, 1.0])


def test_max_splits_ties_equally():
    x = leaf([1.0, 3.0, 3.0])
    x.max().backward()
    assert_close(x.grad, [0.0, 0.5, 0.5])
