"""Optimisers and schedules against PyTorch and their definitions."""
import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import optim


def _params(rng):
    return [rng.standard_normal((4, 3)), rng.standard_normal(3)]


def _grads(rng, step):
    return [rng.standard_normal((4, 3)) * (step + 1), rng.standard_normal(3)]


@pytest.mark.parametrize("mode", ["auto", "reference"])   # the fused AdamW kernel, and the array code
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_optimizer_matches_pytorch(kind, mode):
    torch = pytest.importorskip("torch")         # only this test needs it; the rest run without
    rng = np.random.default_rng(0)
    init = _params(rng)
    ours = [("w", mt.nn.Parameter(init[0].copy())), ("b", mt.nn.Parameter(init[1].copy()))]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    if kind == "adamw":
        opt = optim.AdamW(ours, lr=0.01, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1, no_decay={"b"})
        ref = torch.optim.AdamW([{"params": [theirs[0]], "weight_decay": 0.1},
                                 {"params": [theirs[1]], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.98), eps=1e-8)
    else:
        opt = optim.SGD(ours, lr=0.05, momentum=0.9)
        ref = torch.optim.SGD(theirs, lr=0.05, momentum=0.9)
    grad_rng = np.random.default_rng(1)
    for step in range(5):
        for (_, p), t, g in zip(ours, theirs, _grads(grad_rng, step)):
            p.grad = g.copy()
            t.grad = torch.tensor(g.copy())
        with mt.kernels.using(mode):
            opt.step()
        ref.step()
    for (_, p), t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_optimizer_state_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    a = [("w", mt.nn.Parameter(rng.standard_normal((3, 3))))]
    b = [("w", mt.nn.Parameter(a[0][1].data.copy()))]
    opt_a, opt_b = optim.AdamW(a, lr=0.1), optim.AdamW(b, lr=0.1)
    g = rng.standard_normal((3, 3))
    for opt, params in ((opt_a, a), (opt_b, b)):
        params[0][1].grad = g.copy()
        opt.step()
    opt_c = optim.AdamW(b, lr=0.1)
    opt_c.load_state_dict(opt_b.state_dict())
    for opt, params in ((opt_a, a), (opt_c, b)):
        params[0][1].grad = g.copy()
        opt.step()
    np.testing.assert_array_equal(a[0][1].data, b[0][1].data)
    with pytest.raises(ValueError, match="missing"):
        opt_c.load_state_dict({"step_count": np.array(1)})


def test_clip_grad_norm_scales_to_the_limit():
    p = [("a", mt.nn.Parameter(np.zeros(2))), ("b", mt.nn.Parameter(np.zeros(1)))]
    p[0][1].grad, p[1][1].grad = np.array([3.0, 0.0]), np.array([4.0])
    assert optim.clip_grad_norm(p, 1.0) == pytest.approx(5.0)
    total = math.sqrt(sum(float((q.grad ** 2).sum()) for _, q in p))
    assert total == pytest.approx(1.0, rel=1e-5)


def test_schedules():
    s = optim.WarmupCosine(1.0, warmup=10, total=110, min_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55) and s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    lin = optim.WarmupLinear(1.0, warmup=0, total=100)
    assert lin(50) == pytest.approx(0.5) and lin(100) == 0.0
    inv = optim.InverseSqrt(1.0, warmup=4)
    assert inv(3) == pytest.approx(1.0) and inv(15) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.make_schedule("step", 1.0, 1, 10)
