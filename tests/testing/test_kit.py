"""The testing kit as its users meet it: check_vjp on plain arrays, gradcheck's options, and
the pytest plugin in a suite that lives outside this repository."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend
from minitransformer.testing import (
    GradcheckError, NondifferentiableError, check_vjp, numerical_jacobian, numerical_vjp,
)


# ---------------------------------------------------------------------------------------
# check_vjp: a plain array function and its hand-written VJP
# ---------------------------------------------------------------------------------------

def softplus(x):
    xp = backend.xp(x)
    return xp.logaddexp(0.0, x)


def softplus_vjp(g, x):            # d softplus / dx = sigmoid(x)
    xp = backend.xp(x)
    return (g / (1.0 + xp.exp(-x)),)


def softplus_vjp_wrong(g, x):      # off by a factor that finite differences see
    xp = backend.xp(x)
    return (1.01 * g / (1.0 + xp.exp(-x)),)


def x64(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_check_vjp_passes_a_right_vjp_and_catches_a_wrong_one():
    assert check_vjp(softplus, softplus_vjp, (x64(3, 4),)) is True
    assert check_vjp(softplus, softplus_vjp, (x64(3, 4),), fast_mode=True) is True
    with pytest.raises(GradcheckError, match=r"J\^T g mismatch for argument 0 \(shape \(3, 4\)\)"):
        check_vjp(softplus, softplus_vjp_wrong, (x64(3, 4),))
    with pytest.raises(GradcheckError, match="fast mode"):
        check_vjp(softplus, softplus_vjp_wrong, (x64(3, 4),), fast_mode=True)


def test_check_vjp_with_an_integer_argument_and_a_given_output_gradient():
    def pick(x, idx):                       # x[(0..n-1), idx]: integer ids get no gradient
        return x[np.arange(x.shape[0]), idx]

    def pick_vjp(g, x, idx):
        dx = np.zeros_like(x)
        np.add.at(dx, (np.arange(x.shape[0]), idx), g)
        return dx, None

    idx = np.array([2, 0, 2])
    assert check_vjp(pick, pick_vjp, (x64(3, 4), idx), grad_output=np.array([1.0, -2.0, 0.5]))
    with pytest.raises(ValueError, match=r"grad_output has shape \(2,\), f's output has \(3,\)"):
        check_vjp(pick, pick_vjp, (x64(3, 4), idx), grad_output=np.ones(2))


def test_check_vjp_refuses_what_would_make_it_meaningless():
    with pytest.raises(TypeError, match="argument 0 has dtype float32"):
        check_vjp(softplus, softplus_vjp, (x64(3).astype(np.float32),))

    def mutating(x):
        x *= 1.0 + 1e-9                     # writes into its input
        return softplus(x)
    with pytest.raises(GradcheckError, match="f wrote into argument 0"):
        check_vjp(mutating, softplus_vjp, (x64(3),))
    with pytest.raises(GradcheckError, match="f_vjp returned 2 gradients for 1 arguments"):
        check_vjp(softplus, lambda g, x: (g, g), (x64(3),))
    with pytest.raises(GradcheckError, match="has shape \\(3, 1\\)"):
        check_vjp(softplus, lambda g, x: (g[:, None],), (x64(3),))


def test_a_kink_is_reported_as_such_not_as_a_wrong_backward():
    relu = lambda x: np.maximum(x, 0.0)                         # noqa: E731
    relu_vjp = lambda g, x: (g * (x > 0),)                      # noqa: E731
    x = np.array([-1.0, 0.0, 2.0])                              # 0.0 sits on the kink
    with pytest.raises(NondifferentiableError, match=r"not differentiable at .* element \(1,\)"):
        check_vjp(relu, relu_vjp, (x,), grad_output=np.ones(3))
    # a wrong backward at a smooth point stays a mismatch
    with pytest.raises(GradcheckError) as e:
        check_vjp(relu, lambda g, x: (2 * g * (x > 0),), (np.array([-1.0, 0.5, 2.0]),), grad_output=np.ones(3))
    assert not isinstance(e.value, NondifferentiableError)


def test_a_report_instead_of_an_exception():
    report = check_vjp(softplus, softplus_vjp_wrong, (x64(3),), raise_exception=False)
    assert not report and report.kind == "mismatch" and "J^T g mismatch" in report.failure
    worst = report.worst["argument 0 (shape (3,))"]
    assert worst["analytical"] == pytest.approx(1.01 * worst["numerical"], rel=1e-6)
    assert check_vjp(softplus, softplus_vjp, (x64(3),), raise_exception=False)


def test_numerical_jacobian_and_vjp_on_a_linear_map():
    a = x64(3, 4)
    jac, = numerical_jacobian(lambda x: a @ x, (x64(4),))
    np.testing.assert_allclose(jac, a, atol=1e-8)
    g = x64(3, seed=1)
    vjp, = numerical_vjp(lambda x: a @ x, (x64(4),), g)
    np.testing.assert_allclose(vjp, a.T @ g, atol=1e-8)


# ---------------------------------------------------------------------------------------
# gradcheck's options
# ---------------------------------------------------------------------------------------

class WrongSquare(mt.Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save(a=a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        return 2.02 * g * ctx.a


def test_gradcheck_with_a_given_output_gradient():
    x = mt.tensor(x64(2, 3), requires_grad=True)
    g = x64(2, 3, seed=5)
    assert mt.gradcheck(lambda t: (t * t).tanh(), (x,), grad_output=g)
    with pytest.raises(GradcheckError, match=r"J\^T g mismatch for input 0"):
        mt.gradcheck(lambda t: WrongSquare.apply(t), (x,), grad_output=g)


def test_gradcheck_checks_the_parameters_of_a_module():
    layer = mt.nn.Linear(3, 2).astype("float64")
    x = mt.tensor(x64(4, 3))
    assert mt.gradcheck(lambda t: layer(t), (x,), module=layer)
    layer.weight.data[...] = 0.0                       # still correct, whatever the values
    assert mt.gradcheck(lambda t: layer(t).tanh(), (x,), module=layer)
    with pytest.raises(TypeError, match="parameter weight .* has dtype float32"):
        mt.gradcheck(lambda t: layer32(t), (x,), module=(layer32 := mt.nn.Linear(3, 2)))


def test_gradcheck_names_a_wrong_parameter_gradient():
    class Scale(mt.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = mt.nn.Parameter(np.ones(3))

        def forward(self, x):
            return WrongSquare.apply(self.w) * x
    m = Scale()
    with pytest.raises(GradcheckError, match="parameter w"):
        mt.gradcheck(lambda t: m(t), (mt.tensor(x64(3)),), module=m)


def test_gradcheck_report_and_kink():
    x = mt.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    with pytest.raises(NondifferentiableError):
        mt.gradcheck(lambda t: t.relu(), (x,))
    report = mt.gradcheck(lambda t: WrongSquare.apply(t), (mt.tensor(x64(3), requires_grad=True),),
                          raise_exception=False)
    assert not report and report.kind == "mismatch"


# ---------------------------------------------------------------------------------------
# The plugin, in a suite outside this repository
# ---------------------------------------------------------------------------------------

USER_TEST = textwrap.dedent('''
    import sys
    import numpy as np
    import pytest
    from hypothesis import given
    from minitransformer import backend
    from minitransformer.testing import GradcheckError, check_vjp, float_arrays

    def cube(x):
        return x * x * x

    def cube_vjp(g, x):
        return (3 * g * x * x,)

    def cube_vjp_wrong(g, x):
        return (3 * g * x,)

    @given(float_arrays((2, 3)))
    def test_my_op(x):
        assert check_vjp(cube, cube_vjp, (x,))

    def test_a_wrong_backward_is_caught():
        with pytest.raises(GradcheckError):
            check_vjp(cube, cube_vjp_wrong, (np.linspace(0.5, 2, 6).reshape(2, 3),))

    def test_on_the_strict_device(strict_device):
        x = strict_device.to_strict(np.linspace(-1, 1, 6))
        assert backend.device_of(x) == "strict"
        assert check_vjp(cube, cube_vjp, (x,))
        with pytest.raises(TypeError, match="strict backend"):
            np.asarray(x)                   # what would fail on a GPU fails here

    def test_kernel_mode(kernel_mode, array_module):
        assert kernel_mode in ("reference", "numba") and array_module is np

    @pytest.mark.gpu
    def test_needs_a_gpu():
        raise AssertionError("must be skipped without a GPU")

    def test_nothing_heavy_was_imported():
        assert "torch" not in sys.modules and "transformers" not in sys.modules
''')


@pytest.mark.parametrize("how", ["autoload", "explicit"])
def test_a_users_suite_outside_the_repository(tmp_path, how):
    (tmp_path / "test_user_op.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CI", "HYPOTHESIS_PROFILE")}
    if how == "autoload":
        # the entry point loads the plugin; the conftest only picks the offered profile
        (tmp_path / "conftest.py").write_text(
            'from hypothesis import settings\nsettings.load_profile("minitransformer-ci")\n')
    else:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        (tmp_path / "conftest.py").write_text('pytest_plugins = ["minitransformer.testing.plugin", "hypothesis"]\n')
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "6 passed, 1 skipped" in out.stdout
    assert "needs a CUDA GPU with CuPy" in out.stdout


def test_the_readme_example_runs_and_can_fail():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Testing your own ops"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    scope["test_softplus"]()                              # hypothesis runs it over its examples
    scope["softplus_vjp"] = lambda g, x: (g / (1.0 + np.exp(x)),)   # a sign slip in the backward
    with pytest.raises(GradcheckError):
        exec("test_softplus()", scope)
