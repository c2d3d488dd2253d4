"""Our gradient-check registry: one spec per differentiable op of the library.

Built on the public registry (``minitransformer.testing.op_specs``), which a user's suite
uses the same way. A spec says how to draw inputs for an op (shapes, including broadcasting
ones, and the domain where the op is smooth) and which ops it exercises (``covers``). One
hypothesis test (test_op_harness.py) runs ``mt.gradcheck`` over every spec, and a
completeness test fails when a public op (a ``Function`` subclass of the library, or a
public function of ``mt.functional`` / ``mt.autograd``) is covered by no spec.

To add an op: write its Function, then add a spec here.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.autograd import ops
from minitransformer.testing import broadcastable_shapes, float_arrays, shapes
from minitransformer.testing.op_specs import OpRegistry, public_functions


# Tolerances from the finite-difference error, not a blanket 1e-3. Central differences with
# step h = 1e-6 in float64 err by about h^2 |f^(3)| / 6 (truncation, ~1e-13 here) plus
# 2^-52 |f| / h (rounding, ~2e-10 |f|); inputs are O(1) to O(10), so an absolute 1e-7 and a
# relative 1e-6 leave a margin of 50 or more over both, while a backward that is off by 0.01%
# fails. A spec whose op has a larger error of its own says so beside a looser value.
FD_ATOL = 1e-7
FD_RTOL = 1e-6

SPECS = OpRegistry(atol=FD_ATOL, rtol=FD_RTOL, examples=15)
spec = SPECS.spec

# Constants an op's inputs are combined with (masks, targets, index arrays) must live on the
# same device as the inputs; the strict-backend run places them with SPECS.placing(to_strict).
dev = SPECS.constant


def _pair(draw, **domain):
    sa, sb = draw(broadcastable_shapes(2, max_dims=3))
    return draw(float_arrays(sa, **domain)), draw(float_arrays(sb, **domain))


def _one(draw, min_dims=0, max_dims=3, **domain):
    return draw(float_arrays(draw(shapes(min_dims=min_dims, max_dims=max_dims)), **domain))


# ------------------------------------------------------------------ arithmetic
@spec("add", [ops.Add, "add"])
def _(draw):
    return (lambda a, b: a + b), list(_pair(draw))


@spec("sub", [ops.Sub, "sub"])
def _(draw):
    return (lambda a, b: a - b), list(_pair(draw))


@spec("mul", [ops.Mul, "mul"])
def _(draw):
    return (lambda a, b: a * b), list(_pair(draw))


@spec("div", [ops.Div, "div"])
def _(draw):
    a, b = _pair(draw, min_magnitude=0.5)
    return (lambda a, b: a / b), [a, b]


@spec("neg", [ops.Neg])
def _(draw):
    return (lambda a: -a), [_one(draw)]


@spec("pow", [ops.Pow])
def _(draw):
    a, b = _pair(draw, min_value=0.5, max_value=2.0)
    return (lambda a, b: a ** b), [a, b]


@spec("pow_scalar", [ops.Pow])
def _(draw):
    e = draw(st.sampled_from([2, 3, 0.5, -1.0]))
    return (lambda a: a ** e), [_one(draw, min_value=0.5, max_value=2.0)]


@spec("matmul", [ops.MatMul, "matmul"])
def _(draw):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ba, bb = draw(broadcastable_shapes(2, max_dims=2, max_side=3))
    kind = draw(st.sampled_from(["batched", "vec-mat", "mat-vec", "vec-vec"]))
    shape_a = {"batched": (*ba, n, k), "vec-mat": (k,), "mat-vec": (*ba, n, k), "vec-vec": (k,)}[kind]
    shape_b = {"batched": (*bb, k, m), "vec-mat": (*bb, k, m), "mat-vec": (k,), "vec-vec": (k,)}[kind]
    return (lambda a, b: mt.matmul(a, b)), [draw(float_arrays(shape_a)), draw(float_arrays(shape_b))]


# ------------------------------------------------------------------ elementwise
@spec("exp", [ops.Exp, "exp"])
def _(draw):
    return (lambda a: a.exp()), [_one(draw)]


@spec("log", [ops.Log, "log"])
def _(draw):
    return (lambda a: a.log()), [_one(draw, min_value=0.2, max_value=3.0)]


@spec("sqrt", [ops.Sqrt, "sqrt"])
def _(draw):
    return (lambda a: a.sqrt()), [_one(draw, min_value=0.2, max_value=3.0)]


@spec("tanh", [ops.Tanh, "tanh"])
def _(draw):
    return (lambda a: a.tanh()), [_one(draw)]


@spec("sigmoid", [ops.Sigmoid, "sigmoid"])
def _(draw):
    return (lambda a: a.sigmoid()), [_one(draw, min_value=-30, max_value=30)]


@spec("relu", [ops.Relu, "relu"])
def _(draw):
    return (lambda a: a.relu()), [_one(draw, min_magnitude=1e-3)]


@spec("abs", [ops.Abs])
def _(draw):
    return (lambda a: a.abs()), [_one(draw, min_magnitude=1e-3)]


@spec("gelu", [ops.Gelu, ops.GeluTanh, "gelu"])
def _(draw):
    approx = draw(st.sampled_from(["none", "tanh"]))
    return (lambda a: F.gelu(a, approximate=approx)), [_one(draw, min_value=-4, max_value=4)]


@spec("cast", [ops.Cast])
def _(draw):
    # float64 -> float32 -> float64 loses precision, so check float64 -> float64 (and the
    # dtype rule that a gradient comes back in its input's dtype is checked by gradcheck).
    return (lambda a: (a.astype("float64") * 2.0)), [_one(draw)]


@spec("to_device", [ops.ToDevice])
def _(draw):
    # To the host and back, so on any device both directions are differentiated.
    return (lambda a: ops.ToDevice.apply(ops.ToDevice.apply(a, device="cpu") * 1.5, device=a.device)), [_one(draw)]


# ------------------------------------------------------------------ reductions
def _axis(draw, ndim):
    if ndim == 0:
        return None
    return draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                          st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))


@spec("sum", [ops.Sum])
def _(draw):
    a = _one(draw)
    axis, keep = _axis(draw, a.ndim), draw(st.booleans())
    return (lambda x: x.sum(axis=axis, keepdims=keep)), [a]


@spec("mean", [ops.Mean])
def _(draw):
    a = _one(draw)
    axis, keep = _axis(draw, a.ndim), draw(st.booleans())
    return (lambda x: x.mean(axis=axis, keepdims=keep)), [a]


@spec("max", [ops.Max])
def _(draw):
    shape = draw(shapes(min_dims=0, max_dims=3))
    # A tie (or a near-tie within the finite-difference step) has no derivative: draw a
    # permutation of well-separated values.
    order = draw(st.permutations(list(range(int(np.prod(shape))))))
    a = (np.array(order, dtype=np.float64).reshape(shape) * 0.37 - 1.0)
    axis, keep = _axis(draw, a.ndim), draw(st.booleans())
    return (lambda x: x.max(axis=axis, keepdims=keep)), [a]


@spec("var", [ops.Var])
def _(draw):
    a = _one(draw, min_dims=1)
    axis, keep = _axis(draw, a.ndim), draw(st.booleans())
    n = a.size if axis is None else int(np.prod([a.shape[i] for i in np.atleast_1d(axis)]))
    ddof = draw(st.integers(0, 1)) if n > 1 else 0
    return (lambda x: x.var(axis=axis, keepdims=keep, ddof=ddof)), [a]


# ------------------------------------------------------------------ shape
@spec("reshape", [ops.Reshape])
def _(draw):
    a = _one(draw, min_dims=1)
    return (lambda x: x.reshape(-1, 1) * 2.0), [a]


@spec("transpose_permute", [ops.Permute])
def _(draw):
    a = _one(draw, min_dims=2)
    perm = draw(st.permutations(list(range(a.ndim))))
    if draw(st.booleans()):
        return (lambda x: x.permute(*perm) * 1.0), [a]
    return (lambda x: x.transpose(0, -1) * 1.0), [a]


@spec("expand", [ops.Expand])
def _(draw):
    (sa, target) = draw(broadcastable_shapes(2, max_dims=3)), None
    a = draw(float_arrays(sa[0]))
    target = np.broadcast_shapes(sa[0], sa[1])
    return (lambda x: x.expand(*target) * 1.0), [a]


@spec("squeeze_unsqueeze", ["squeeze", "unsqueeze"])
def _(draw):
    a = _one(draw, min_dims=1)
    ax = draw(st.integers(-a.ndim - 1, a.ndim))
    return (lambda x: mt.autograd.squeeze(mt.autograd.unsqueeze(x, ax) * 3.0, ax)), [a]


@spec("concatenate", [ops.Concatenate, "concatenate"])
def _(draw):
    base = draw(shapes(min_dims=1, max_dims=3))
    axis = draw(st.integers(0, len(base) - 1))
    n = draw(st.integers(1, 3))
    arrays = []
    for _i in range(n):
        s = list(base)
        s[axis] = draw(st.integers(1, 3))
        arrays.append(draw(float_arrays(tuple(s))))
    return (lambda *xs: mt.concatenate(xs, axis=axis)), arrays


@spec("stack", [ops.Stack, "stack"])
def _(draw):
    base = draw(shapes(min_dims=0, max_dims=2))
    n = draw(st.integers(1, 3))
    axis = draw(st.integers(0, len(base)))
    return (lambda *xs: mt.stack(xs, axis=axis)), [draw(float_arrays(base)) for _ in range(n)]


@spec("split", ["split"])
def _(draw):
    a = _one(draw, min_dims=1)
    axis = draw(st.integers(0, a.ndim - 1))
    n = a.shape[axis]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=2)))
    return (lambda x: mt.concatenate([p * float(i + 1) for i, p in enumerate(mt.split(x, cuts, axis))], axis=axis)), [a]


@spec("getitem", [ops.GetItem])
def _(draw):
    a = _one(draw, min_dims=1)
    kind = draw(st.sampled_from(["slice", "int-array", "bool", "mixed"]))
    if kind == "slice":
        idx = (slice(None, None, draw(st.sampled_from([1, 2, -1]))),)
    elif kind == "int-array":   # repeated indices exercise the scatter-add
        idx = dev(np.array(draw(st.lists(st.integers(0, a.shape[0] - 1), min_size=1, max_size=5))))
    elif kind == "bool":
        idx = dev(np.array(draw(st.lists(st.booleans(), min_size=a.shape[0], max_size=a.shape[0]))))
    else:
        idx = (dev(np.array(draw(st.lists(st.integers(0, a.shape[0] - 1), min_size=1, max_size=3)))), Ellipsis)
    return (lambda x: x[idx] * 2.0), [a]


# ------------------------------------------------------------------ selection
@spec("where", [ops.Where, "where"])
def _(draw):
    sc, sa, sb = draw(broadcastable_shapes(3, max_dims=3))
    cond = dev(draw(float_arrays(sc)) > 0)
    return (lambda a, b: mt.where(cond, a, b)), [draw(float_arrays(sa)), draw(float_arrays(sb))]


@spec("masked_fill", [ops.MaskedFill])
def _(draw):
    sa, sm = draw(broadcastable_shapes(2, max_dims=3))
    target = np.broadcast_shapes(sa, sm)
    a = draw(float_arrays(target))
    mask = dev(draw(float_arrays(sm)) > 0)
    return (lambda x: x.masked_fill(mask, -3.0)), [a]


@spec("maximum", [ops.Maximum, "maximum"])
def _(draw):
    a, b = _pair(draw)
    if np.any(np.abs(np.subtract(a, b)) < 1e-3):   # ties are not differentiable
        b = b + 0.01
    return (lambda x, y: mt.maximum(x, y)), [a, b]


# ------------------------------------------------------------------ functional
@spec("softmax", [F.Softmax, "softmax"])
def _(draw):
    a = _one(draw, min_dims=1)
    axis = draw(st.integers(-a.ndim, a.ndim - 1))
    if draw(st.booleans()):
        mask = draw(float_arrays(a.shape)) > -1.0     # some rows may be fully masked
        weights = dev(np.arange(1.0, a.shape[-1] + 1))
        return (lambda x: F.softmax(x, axis=-1, mask=dev(mask)) * weights), [a]
    weights = dev(np.arange(1.0, a.shape[axis] + 1).reshape((-1,) + (1,) * (a.ndim - 1 - axis % a.ndim)))
    return (lambda x: F.softmax(x, axis=axis) * weights), [a]


@spec("log_softmax", [F.LogSoftmax, "log_softmax"])
def _(draw):
    a = _one(draw, min_dims=1)
    axis = draw(st.integers(-a.ndim, a.ndim - 1))
    return (lambda x: F.log_softmax(x, axis=axis)), [a]


@spec("cross_entropy", [F.CrossEntropy, "cross_entropy"])
def _(draw):
    lead = draw(shapes(min_dims=1, max_dims=2))
    v = draw(st.integers(2, 5))
    logits = draw(float_arrays((*lead, v), min_value=-4, max_value=4))
    targets = np.array(draw(st.lists(st.sampled_from([*range(v), -100]), min_size=int(np.prod(lead)),
                                     max_size=int(np.prod(lead))))).reshape(lead)
    targets = dev(targets)
    smooth = draw(st.sampled_from([0.0, 0.1]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return (lambda x: F.cross_entropy(x, targets, label_smoothing=smooth, reduction=reduction)), [logits]


@spec("linear_cross_entropy", [F.LinearCrossEntropy, "linear_cross_entropy"])
def _(draw):
    lead = draw(shapes(min_dims=1, max_dims=2))
    c, v = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    h = draw(float_arrays((*lead, c), min_value=-2, max_value=2))
    w = draw(float_arrays((v, c), min_value=-2, max_value=2))
    targets = np.array(draw(st.lists(st.sampled_from([*range(v), -100]), min_size=int(np.prod(lead)),
                                     max_size=int(np.prod(lead))))).reshape(lead)
    targets = dev(targets)
    smooth = draw(st.sampled_from([0.0, 0.1]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    block = v * draw(st.integers(1, 3))                  # 1 to 3 rows of logits at a time
    return (lambda x, w: F.linear_cross_entropy(x, w, targets, label_smoothing=smooth, reduction=reduction,
                                                block=block)), [h, w]


@spec("layer_norm", [F.LayerNorm, "layer_norm"])
def _(draw):
    a = _one(draw, min_dims=1)
    c = a.shape[-1]
    if c == 1:
        a = np.concatenate([a, a + 1.0], axis=-1)
        c = 2
    w, b = draw(float_arrays((c,))), draw(float_arrays((c,)))
    return (lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5)), [a, w, b]


@spec("rms_norm", [F.RMSNorm, "rms_norm"])
def _(draw):
    a = _one(draw, min_dims=1, min_magnitude=0.1)
    w = draw(float_arrays((a.shape[-1],)))
    return (lambda x, w: F.rms_norm(x, w, eps=1e-6)), [a, w]


@spec("dropout", ["dropout"])
def _(draw):
    a = _one(draw)
    p = draw(st.sampled_from([0.0, 0.3, 0.5]))
    seed = draw(st.integers(0, 2**32))
    return (lambda x: F.dropout(x, p=p, training=True, seed=seed)), [a]


@spec("embedding", [F.Embedding, "embedding"])
def _(draw):
    v, c = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    ids = np.array(draw(st.lists(st.integers(0, v - 1), min_size=1, max_size=6)))   # repeats too
    ids = dev(ids.reshape(1, -1))
    return (lambda w: F.embedding(ids, w)), [draw(float_arrays((v, c)))]


@spec("linear", [F.Linear, "linear"])
def _(draw):
    lead = draw(shapes(min_dims=1, max_dims=3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    x, w = draw(float_arrays((*lead, n_in))), draw(float_arrays((n_out, n_in)))
    if draw(st.booleans()):
        return (lambda x, w, b: F.linear(x, w, b)), [x, w, draw(float_arrays((n_out,)))]
    return (lambda x, w: F.linear(x, w)), [x, w]


@spec("activation_linear", [F.ActivationLinear, "activation_linear"])
def _(draw):
    lead = draw(shapes(min_dims=1, max_dims=3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    act = draw(st.sampled_from(["relu", "gelu", "gelu_tanh"]))
    # relu has no derivative at 0: keep its inputs away from it
    a = draw(float_arrays((*lead, n_in), min_value=-4, max_value=4, min_magnitude=1e-3 if act == "relu" else 0.0))
    w = draw(float_arrays((n_out, n_in)))
    if draw(st.booleans()):
        return (lambda a, w, b: F.activation_linear(a, w, b, act)), [a, w, draw(float_arrays((n_out,)))]
    return (lambda a, w: F.activation_linear(a, w, activation=act)), [a, w]


@spec("scaled_dot_product_attention", [F.FlashAttention, "scaled_dot_product_attention"],
      fast_mode=True, examples=10)
def _(draw):
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    tq, tk, d = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    tq = min(tq, tk) if draw(st.booleans()) else tq
    q, k, v = (draw(float_arrays(s)) for s in [(b, h, tq, d), (b, h, tk, d), (b, h, tk, d)])
    causal = draw(st.booleans()) and tq <= tk
    mask = dev(draw(float_arrays((b, 1, 1, tk))) > -1.0) if draw(st.booleans()) else None
    p = draw(st.sampled_from([0.0, 0.0, 0.25]))
    seed = draw(st.integers(0, 1000))
    if draw(st.booleans()):
        bias = draw(float_arrays((1, h, tq, tk)))
        return (lambda q, k, v, bias: F.scaled_dot_product_attention(
            q, k, v, mask=mask, is_causal=causal, bias=bias, dropout_p=p, seed=seed)), [q, k, v, bias]
    return (lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, mask=mask, is_causal=causal, dropout_p=p, seed=seed)), [q, k, v]


@spec("packed_self_attention", ["packed_self_attention"], fast_mode=True, examples=8)
def _(draw):
    b, t, h, d = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 2)), draw(st.integers(1, 4))
    qkv = draw(float_arrays((b, t, 3, h, d)))
    causal = draw(st.booleans())
    mask = dev(draw(float_arrays((b, 1, 1, t))) > -1.0) if draw(st.booleans()) else None
    p = draw(st.sampled_from([0.0, 0.0, 0.25]))
    seed = draw(st.integers(0, 1000))
    if draw(st.booleans()):
        bias = draw(float_arrays((1, h, t, t)))
        return (lambda qkv, bias: F.packed_self_attention(
            qkv, mask=mask, is_causal=causal, bias=bias, dropout_p=p, seed=seed)), [qkv, bias]
    return (lambda qkv: F.packed_self_attention(
        qkv, mask=mask, is_causal=causal, dropout_p=p, seed=seed)), [qkv]


# =======================================================================================
# What counts as a public op
# =======================================================================================

OPTIONAL_MODULES = ("cupy", "cupyx", "mpi4py", "matplotlib")

PUBLIC_FUNCTION_NAMES = set(F.__all__) | {
    "add", "sub", "mul", "div", "matmul", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu",
    "where", "maximum", "concatenate", "stack", "split", "squeeze", "unsqueeze",
}


def public_ops(extra_ops=()):
    """Every public op: the library's Function classes (the kernels' too) and function names."""
    functions = public_functions("minitransformer", also=["minitransformer.kernels"], optional=OPTIONAL_MODULES)
    return functions | PUBLIC_FUNCTION_NAMES | set(extra_ops)


def missing_specs(extra_ops=()):
    """Public ops (Function classes and function names) that no spec covers."""
    return SPECS.missing(public_ops(extra_ops))
