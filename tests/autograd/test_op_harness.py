"""One harness gradient-checks every registered op; a public op without a spec fails."""
import numpy as np
import pytest

import minitransformer as mt
from tests.autograd.op_specs import SPECS, missing_specs, public_ops


@pytest.mark.parametrize("spec", SPECS, ids=SPECS.names())
def test_gradcheck(spec):
    with mt.kernels.using("reference"):
        SPECS.property_test(spec)()


def test_every_public_op_has_a_spec():
    SPECS.check_complete(public_ops())


def test_an_op_without_a_spec_is_caught():
    class Cube(mt.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save(a=a)
            return a ** 3

        @staticmethod
        def backward(ctx, g):
            return 3 * g * ctx.a ** 2

    assert "test_an_op_without_a_spec_is_caught.<locals>.Cube" in missing_specs(extra_ops=[Cube])


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(mt.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save(a=a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            return g * ctx.a          # missing the factor 2

    x = mt.tensor(np.linspace(0.5, 1.5, 6).reshape(2, 3), requires_grad=True)
    for fast in (False, True):
        with pytest.raises(mt.GradcheckError, match="input 0"):
            mt.gradcheck(lambda a: WrongSquare.apply(a), (x,), fast_mode=fast)


KERNEL_SPECS = [SPECS[name] for name in ("softmax", "cross_entropy", "scaled_dot_product_attention",
                                         "packed_self_attention", "gelu", "layer_norm", "rms_norm",
                                         "embedding")]


@pytest.mark.parametrize("spec", KERNEL_SPECS, ids=[s.name for s in KERNEL_SPECS])
def test_gradcheck_through_kernels(spec):
    """The same specs with the fast kernels dispatched (where this device has them)."""
    with mt.kernels.using("auto"):
        SPECS.property_test(spec)()
