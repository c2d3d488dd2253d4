"""The op-spec registry as a user's suite meets it: its own ops registered, checked by the same
property test, and an op without a spec named by the completeness check."""
import sys
import textwrap

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.testing import GradcheckError, float_arrays
from minitransformer.testing.op_specs import MissingSpecError, OpRegistry, OpSpec, public_functions

USER_PACKAGE = textwrap.dedent('''
    import minitransformer as mt

    class Cube(mt.Function):
        """y = x^3; backward: dx = 3 x^2 g."""
        @staticmethod
        def forward(ctx, a):
            ctx.save(a=a)
            return a ** 3

        @staticmethod
        def backward(ctx, g):
            return 3 * g * ctx.a ** 2

    class Scale(mt.Function):
        """y = c x for a constant c; backward: dx = c g (planted bug: the factor c is lost)."""
        @staticmethod
        def forward(ctx, a, c):
            ctx.save(c=c)
            return a * c

        @staticmethod
        def backward(ctx, g):
            return g
''')


@pytest.fixture
def user_ops(tmp_path, monkeypatch, request):
    """A package of the user's, on disk, defining two Function subclasses: (its name, its core module).
    Each test gets a package of its own name, so no class of another test's import is found."""
    import importlib

    name = "userops_" + request.node.name
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text(USER_PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, importlib.import_module(f"{name}.core")
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def _registry(core, with_scale=True):
    ops = OpRegistry()

    @ops.spec("cube", covers=[core.Cube])
    def _(draw):
        return (lambda x: core.Cube.apply(x)), [draw(float_arrays((2, 3)))]

    if with_scale:
        @ops.spec("scale", covers=[core.Scale], examples=5)
        def _(draw):
            c = ops.constant(np.array([1.0, 2.0, 3.0]))
            return (lambda x: core.Scale.apply(x, c=c)), [draw(float_arrays((2, 3)))]
    return ops


def test_a_users_ops_are_found_and_every_one_must_have_a_spec(user_ops):
    package, core = user_ops
    functions = public_functions(package)          # imports every module of the package first
    assert functions == {core.Cube, core.Scale}

    complete = _registry(core)
    complete.check_complete(functions)
    assert complete.missing(functions) == []

    partial = _registry(core, with_scale=False)      # the planted gap: Scale has no spec
    assert partial.missing([*functions, "my_function"]) == ["Scale", "my_function"]
    with pytest.raises(MissingSpecError, match=r"2 public ops without a gradient-check spec: Scale, my_function"):
        partial.check_complete([*functions, "my_function"])


def test_the_property_test_passes_a_right_backward_and_catches_a_wrong_one(user_ops):
    _, core = user_ops
    ops = _registry(core)
    assert ops.names() == ["cube", "scale"] and len(ops) == 2 and "cube" in ops
    assert [s.name for s in ops] == ["cube", "scale"]
    ops.property_test("cube")()
    with pytest.raises(GradcheckError, match="input 0"):
        ops.property_test(ops["scale"])()       # Scale's backward drops the factor c


def test_specs_take_the_registry_defaults_unless_they_say_otherwise():
    ops = OpRegistry(atol=1e-7, rtol=1e-6, examples=4)
    ops.spec("a", covers=["a"])(lambda draw: None)
    ops.spec("b", covers=["b"], atol=1e-4, fast_mode=True)(lambda draw: None)
    assert (ops["a"].atol, ops["a"].rtol, ops["a"].examples, ops["a"].fast_mode) == (1e-7, 1e-6, 4, False)
    assert (ops["b"].atol, ops["b"].rtol, ops["b"].fast_mode) == (1e-4, 1e-6, True)
    assert ops.covered() == {"a", "b"}


def test_a_registry_refuses_what_would_make_its_tests_ambiguous():
    ops = OpRegistry()
    ops.register(OpSpec("exp", draw=lambda draw: None, covers=("exp",)))
    with pytest.raises(ValueError, match="a spec named 'exp' is already registered"):
        ops.spec("exp")(lambda draw: None)
    with pytest.raises(TypeError, match="register expects an OpSpec, got function"):
        ops.register(lambda draw: None)
    with pytest.raises(KeyError, match="no spec named 'log'; registered: exp"):
        ops["log"]


def test_constants_follow_the_device_being_tested():
    from minitransformer.testing.strict import StrictArray, to_strict

    ops = OpRegistry()
    a = np.ones(3)
    assert ops.constant(a) is a
    with ops.placing(to_strict):
        assert isinstance(ops.constant(a), StrictArray)
    assert ops.constant(a) is a


def test_check_runs_one_example_from_any_source_of_draws():
    ops = OpRegistry()

    @ops.spec("tanh", covers=["tanh"])
    def _(draw):
        return (lambda x: x.tanh()), [draw("x")]

    examples = {"x": np.linspace(-1.0, 1.0, 5)}
    assert ops.check("tanh", examples.__getitem__) is True
    assert ops.check(ops["tanh"], examples.__getitem__, fast_mode=True) is True


def test_our_registry_is_a_user_of_the_public_one():
    from tests.autograd.op_specs import SPECS, public_ops

    # 39 Function classes + linear_cross_entropy + activation_linear + packed_self_attention
    assert isinstance(SPECS, OpRegistry) and len(SPECS) == 45
    assert mt.autograd.ops.Add in public_ops() and SPECS.missing(public_ops()) == []


def test_the_readme_registry_example_runs_and_catches_an_op_without_a_spec(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Testing your own ops"):]
    code = [c for c in re.findall(r"```python\n(.*?)```", section, re.S) if "OpRegistry" in c][0]
    cube_only = USER_PACKAGE[:USER_PACKAGE.index("class Scale")]
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "mypackage" / "ops.py").write_text(cube_only)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        scope = {"pytest": pytest}
        exec(compile(code, "README.md", "exec"), scope)
        for spec in scope["OPS"]:
            scope["test_gradient"](spec)
        scope["test_every_op_has_a_spec"]()
        scale_only = "import minitransformer as mt\n" + USER_PACKAGE[USER_PACKAGE.index("class Scale"):]
        (tmp_path / "mypackage" / "more.py").write_text(scale_only)     # a new op comes, without a spec
        with pytest.raises(MissingSpecError, match="without a gradient-check spec: Scale"):
            scope["test_every_op_has_a_spec"]()
    finally:
        for module in [m for m in sys.modules if m == "mypackage" or m.startswith("mypackage.")]:
            del sys.modules[module]
