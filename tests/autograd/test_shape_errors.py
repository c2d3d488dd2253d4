"""Every op that can meet operands of the wrong shapes says which op, which shapes, and (where
there is one) what to do, instead of passing on the array library's message."""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer.autograd import ops


def t(*shape):
    return mt.tensor(np.ones(shape))


CASES = {
    "add": (lambda: t(2, 3) + t(4, 5), r"add: shapes \(2, 3\) and \(4, 5\) do not broadcast.*reshape or expand"),
    "sub": (lambda: t(2, 3) - t(4, 5), r"sub: shapes \(2, 3\) and \(4, 5\) do not broadcast"),
    "mul": (lambda: t(2, 3) * t(4, 5), r"mul: shapes \(2, 3\) and \(4, 5\) do not broadcast"),
    "div": (lambda: t(2, 3) / t(4, 5), r"div: shapes \(2, 3\) and \(4, 5\) do not broadcast"),
    "pow": (lambda: t(2, 3) ** t(4, 5), r"pow: shapes \(2, 3\) and \(4, 5\) do not broadcast"),
    "maximum": (lambda: ops.maximum(t(2, 3), t(4, 5)), r"maximum: shapes \(2, 3\) and \(4, 5\)"),
    "matmul": (lambda: t(2, 3, 4) @ t(5, 4, 2), r"matmul: batch axes of shapes \(2, 3, 4\) and \(5, 4, 2\)"),
    "reshape": (lambda: t(2, 3).reshape(7), r"reshape: .*\(2, 3\) \(6 elements\) into shape \(7,\)"),
    "expand": (lambda: t(2, 3).expand(4, 3), r"expand: cannot expand shape \(2, 3\) to \(4, 3\)"),
    "concatenate": (lambda: ops.concatenate([t(2, 3), t(2, 4)]), r"concatenate: .*except 0"),
    "stack": (lambda: ops.stack([t(2, 3), t(2, 4)]), r"stack: all shapes must be equal"),
    "where": (lambda: ops.where(np.ones((4, 5), bool), t(2, 3), t(2, 3)), r"where: condition \(4, 5\)"),
    "masked_fill": (lambda: t(2, 3).masked_fill(np.ones((4, 5), bool), 0.0), r"masked_fill: mask shape \(4, 5\)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_shape_error_names_the_op_and_hides_the_array_library_error(name):
    run, message = CASES[name]
    with pytest.raises(ValueError, match=message) as caught:
        run()
    assert caught.value.__suppress_context__ and caught.value.__cause__ is None


def test_shape_errors_passes_other_errors_and_results_through():
    with pytest.raises(TypeError, match="left alone"), ops.shape_errors(lambda: "not this"):
        raise TypeError("left alone")
    with ops.shape_errors(lambda: 1 / 0):          # the message is built only on an error
        value = 3
    assert value == 3
