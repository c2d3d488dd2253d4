"""Backward's memory: leaf gradients taken without a copy only when no one else holds them,
and activations released as soon as the last op that needs them is done."""
import weakref

import numpy as np

import minitransformer as mt
from minitransformer.testing import assert_close


def leaf(values):
    return mt.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


class PassThrough(mt.autograd.Function):
    """y = x; backward hands the incoming gradient straight back (no copy)."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad


class SavedGrad(mt.autograd.Function):
    """y = c * x with a saved constant c; backward returns the saved array itself."""

    @staticmethod
    def forward(ctx, x, c):
        ctx.save(c=c)
        return c * x

    @staticmethod
    def backward(ctx, grad):
        return ctx.c, None          # right for grad = 1 (the test's), and aliasing on purpose


def test_a_leaf_gradient_never_aliases_the_callers_gradient():
    x = leaf([1.0, 2.0])
    g = np.array([3.0, 4.0])
    PassThrough.apply(x).backward(g)
    g[:] = 0.0                       # the caller reuses its buffer
    assert_close(x.grad, [3.0, 4.0])


def test_a_gradient_returned_for_two_inputs_is_copied_for_each():
    x, y = leaf([1.0]), leaf([2.0])
    (x + y).sum().backward()         # Add.backward returns the same array for both
    x.grad *= 10.0                   # a clipper scales one gradient in place
    assert_close(y.grad, [1.0])


def test_one_array_reaching_two_leaves_is_copied_for_the_second():
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    # Mul makes a fresh gradient, Add passes it to both branches, each PassThrough hands
    # it on unchanged: the same array arrives at x and at y from two different nodes.
    ((PassThrough.apply(x) + PassThrough.apply(y)) * 2.0).sum().backward()
    x.grad *= 10.0
    assert_close(y.grad, [2.0, 2.0])


def test_a_gradient_the_op_still_holds_is_copied():
    x = leaf([1.0, 2.0])
    c = np.array([5.0, 7.0])
    y = SavedGrad.apply(x, c).sum()
    y.backward(retain_graph=True)
    x.grad *= 0.0                    # in place, as gradient clipping does
    y.backward()
    assert_close(c, [5.0, 7.0])      # the op's saved array is untouched
    assert_close(x.grad, [5.0, 7.0])


def test_a_fresh_gradient_is_kept_without_a_copy():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    w = leaf([[0.5], [0.25]])
    (x @ w).sum().backward()
    assert x.grad.base is None and w.grad.base is None
    assert_close(w.grad, x.data.sum(axis=0, keepdims=True).T)


class Reshaped(mt.autograd.Function):
    """y = x; backward returns a reshaped view of a fresh array (as the kernel wrappers do),
    or of an array someone else still holds (``KEPT``)."""

    KEPT = []

    @staticmethod
    def forward(ctx, x, keep):
        ctx.save(shape=x.shape, keep=keep)
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        flat = np.array(grad, dtype=np.float64).reshape(-1)
        if ctx.keep:
            Reshaped.KEPT.append(flat)
        return flat.reshape(ctx.shape), None


def test_a_reshaped_fresh_gradient_is_kept_without_a_copy():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    Reshaped.apply(x, False).sum().backward()
    assert x.grad.base is not None                     # the view itself: no copy was made
    assert_close(x.grad, np.ones((2, 2)))


def test_a_reshaped_gradient_someone_else_holds_is_copied():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    Reshaped.apply(x, True).sum().backward()
    Reshaped.KEPT.pop()[:] = 7.0                       # the other holder writes into its array
    assert x.grad.base is None
    assert_close(x.grad, np.ones((2, 2)))


def test_accumulating_never_changes_a_gradient_array_the_caller_holds():
    w = leaf([[1.0, 2.0], [3.0, 4.0]])
    x = mt.tensor(np.array([[1.0, -1.0]]))
    ((x @ w).sum() + (w * 2.0).sum()).backward()      # w gets two fresh gradients
    first = w.grad
    kept = first.copy()
    ((x @ w).sum() + (w * 2.0).sum()).backward()      # accumulates onto the first pass's
    assert_close(first, kept)
    assert_close(w.grad, 2 * kept)
    assert_close(kept, np.array([[3.0, 3.0], [1.0, 1.0]]))


def test_summing_an_inputs_gradients_never_writes_into_the_callers_gradient():
    # h feeds two ops: PassThrough hands the caller's gradient on as one of h's gradients,
    # Mul makes a fresh other. In either order of arrival, their sum may go into the fresh
    # one, never into the caller's array.
    for order in (0, 1):
        x = leaf([1.0, 2.0])
        h = x * 1.0
        g = np.array([3.0, 4.0])
        parts = [PassThrough.apply(h), h * 2.0]
        (parts[order] + parts[1 - order]).backward(g)
        assert_close(g, [3.0, 4.0])
        assert_close(x.grad, [9.0, 12.0])


def test_summing_an_inputs_gradients_never_writes_into_an_array_an_op_saved():
    # SavedGrad's gradient for h is the array it saved; Mul's is fresh. In either order
    # of arrival, the sum leaves the saved array alone.
    for order in (0, 1):
        x = leaf([1.0, 2.0])
        h = x * 1.0
        c = np.array([5.0, 7.0])
        parts = [SavedGrad.apply(h, c).sum(), (h * 2.0).sum()]
        (parts[order] + parts[1 - order]).backward()
        assert_close(c, [5.0, 7.0])
        assert_close(x.grad, [7.0, 9.0])


def test_an_input_used_many_times_gets_the_sum_of_its_gradients():
    # h feeds five ops, among them two that share one gradient array (Add's (g, g)):
    # every contribution counts once, whichever array the sum is kept in.
    x = leaf([1.0, -2.0, 0.5])
    h = x * 3.0
    loss = (h * 2.0 + h * h + PassThrough.apply(h) + (h + h)).sum()
    loss.backward()
    assert_close(x.grad, 3.0 * (2.0 + 2.0 * h.data + 1.0 + 2.0))


def test_activations_are_freed_during_backward_not_after():
    seen = {}

    class Probe(mt.autograd.Function):
        """Identity that, in backward (the last node to run), records which activations
        downstream of it are still alive."""

        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, grad):
            seen["alive"] = [r() is not None for r in refs]
            return grad

    x = leaf(np.linspace(-1.0, 1.0, 8))
    a = Probe.apply(x) * 2.0
    b = a.exp()
    refs = [weakref.ref(a), weakref.ref(b)]
    loss = (b * 3.0).sum()
    del a, b
    loss.backward()
    assert seen["alive"] == [False, False]
    assert_close(x.grad, 6.0 * np.exp(2.0 * x.data))


def test_the_graph_keeps_no_array_an_op_did_not_save():
    # h = x W^T is consumed by a sum, which saves nothing: once the forward code drops h,
    # its array is freed, though backward still routes a gradient through its node.
    rng = np.random.default_rng(0)
    x = leaf(rng.standard_normal((4, 3)))
    w = leaf(rng.standard_normal((5, 3)))
    h = mt.functional.linear(x, w)
    freed = weakref.ref(h.data)
    out = (h + 1.0).sum()
    del h
    assert freed() is None
    out.backward()
    assert_close(x.grad, np.ones((4, 5)) @ w.data)
    assert_close(w.grad, np.ones((4, 5)).T @ x.data)


def test_retain_grad_fills_held_intermediates_and_skips_dropped_ones():
    x = leaf([1.0, 2.0])
    h = x * 3
    h.retain_grad()
    y = (h * 2).sum()
    y.backward()
    assert_close(h.grad, [2.0, 2.0])
    # an intermediate nobody holds any more gets no gradient written, and costs nothing
    z = x * 5
    z.retain_grad()
    total = (z * z).sum()
    del z
    total.backward()
    assert_close(x.grad, [2.0 * 3 + 50.0, 2.0 * 3 + 100.0])
