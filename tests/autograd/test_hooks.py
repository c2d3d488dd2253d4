"""The engine's observer hook: called around every op's forward and backward, nested, removed on exit."""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.autograd import hooks


def _recorder(log, tag):
    def observer(fn, phase, ctx, arrays, run):
        log.append((tag, "enter", fn.__name__, phase))
        out = run()
        log.append((tag, "exit", fn.__name__, phase))
        return out
    return observer


def test_observer_sees_every_forward_and_backward_with_its_context():
    seen = []

    def observer(fn, phase, ctx, arrays, run):
        out = run()
        # after run(): forward has saved what backward needs, and backward has not released it
        seen.append((fn.__name__, phase, sorted(k for k in vars(ctx)), [a.shape for a in arrays
                                                                        if hasattr(a, "shape")]))
        return out

    x = mt.tensor(np.ones((2, 3)), requires_grad=True)
    w = mt.tensor(np.ones((4, 3)), requires_grad=True)
    with mt.autograd.observe(observer):
        y = F.linear(x, w).sum()
        y.backward()
    names = [(n, p) for n, p, _, _ in seen]
    assert names == [("Linear", "forward"), ("Sum", "forward"), ("Sum", "backward"), ("Linear", "backward")]
    assert seen[0][2] == ["weight", "x"] and seen[0][3] == [(2, 3), (4, 3)]
    assert seen[3][2] == ["weight", "x"] and seen[3][3] == [(2, 4)]          # backward: (grad,)
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 4.0))              # results pass through


def test_observers_nest_first_registered_outermost_and_leave_on_error():
    log = []
    with pytest.raises(RuntimeError, match="boom"):
        with mt.autograd.observe(_recorder(log, "outer")), mt.autograd.observe(_recorder(log, "inner")):
            mt.tensor([1.0, 2.0]).exp()
            raise RuntimeError("boom")
    assert log == [("outer", "enter", "Exp", "forward"), ("inner", "enter", "Exp", "forward"),
                   ("inner", "exit", "Exp", "forward"), ("outer", "exit", "Exp", "forward")]
    assert not hooks.observing()
    log.clear()
    mt.tensor([1.0]).exp()
    assert log == []                                                          # nothing left registered


def test_observe_refuses_what_cannot_be_called():
    with pytest.raises(TypeError, match="callable"):
        with mt.autograd.observe("not a function"):
            pass


def test_ops_declare_their_matrix_product_flops():
    flops = {}

    def observer(fn, phase, ctx, arrays, run):
        out = run()
        flops[f"{fn.__name__}.{phase}"] = fn.flops(ctx, phase, *arrays)
        return out

    a = mt.tensor(np.ones((5, 2, 3)), requires_grad=True)
    b = mt.tensor(np.ones((3, 4)))                     # no gradient: backward computes da only
    with mt.autograd.observe(observer):
        (a @ b).sum().backward()
    assert flops["MatMul.forward"] == 2 * 5 * 2 * 3 * 4
    assert flops["MatMul.backward"] == 2 * 5 * 2 * 3 * 4
    assert flops["Sum.forward"] == 0 == flops["Sum.backward"]
    assert mt.autograd.matmul_flops((7, 1, 2, 3), (4, 3, 5)) == 2 * 7 * 4 * 2 * 3 * 5
