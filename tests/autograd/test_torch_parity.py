"""Values and gradients against PyTorch on composite expressions (float64, 1e-10)."""
import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.testing import relative_error

torch = pytest.importorskip("torch")
TF = torch.nn.functional

rng = np.random.default_rng(1234)
A = rng.standard_normal((3, 4, 5))
B = rng.standard_normal((5, 6))
C = rng.standard_normal((4, 6))
W = rng.standard_normal(6)
BIAS = rng.standard_normal(6)
TARGETS = np.array([[1, 5, -100, 0], [2, 2, 3, -100], [4, 0, 1, 5]])
IDS = np.array([[0, 3, 3], [5, 1, 0]])
Q, K, V = (rng.standard_normal((2, 3, 4, 5)) for _ in range(3))
KEEP = rng.random((2, 1, 1, 4)) > 0.3
KEEP[..., 0] = True
POS_BIAS = rng.standard_normal((1, 3, 4, 4))

# name, our expression, PyTorch's, inputs.  Both sides get the same float64 leaves.
CASES = [
    ("matmul-tanh-broadcast-add", lambda a, b, c: ((a @ b).tanh() + c).sum(),
     lambda a, b, c: ((a @ b).tanh() + c).sum(), [A, B, C]),
    ("softmax-weighted", lambda a, b, c: (F.softmax(a @ b, axis=-1) * c).sum(),
     lambda a, b, c: (torch.softmax(a @ b, dim=-1) * c).sum(), [A, B, C]),
    ("log-softmax-axis1", lambda a: (F.log_softmax(a, axis=1) ** 2).mean(),
     lambda a: (torch.log_softmax(a, dim=1) ** 2).mean(), [A]),
    ("layer-norm", lambda a, b, w, bb: (F.layer_norm(a @ b, w, bb) * (a @ b)).sum(),
     lambda a, b, w, bb: (TF.layer_norm(a @ b, (6,), w, bb) * (a @ b)).sum(), [A, B, W, BIAS]),
    ("rms-norm", lambda a, b, w: (F.rms_norm(a @ b, w, eps=1e-6) ** 3).sum(),
     lambda a, b, w: (TF.rms_norm(a @ b, (6,), w, eps=1e-6) ** 3).sum(), [A, B, W]),
    ("gelu-erf-and-tanh", lambda a: (F.gelu(a) * F.gelu(a, approximate="tanh")).sum(),
     lambda a: (TF.gelu(a) * TF.gelu(a, approximate="tanh")).sum(), [A]),
    ("cross-entropy-ignore", lambda a, b: F.cross_entropy(a @ b, TARGETS),
     lambda a, b: TF.cross_entropy((a @ b).reshape(-1, 6), torch.tensor(TARGETS.reshape(-1))), [A, B]),
    ("cross-entropy-smoothing", lambda a, b: F.cross_entropy(a @ b, TARGETS, label_smoothing=0.1),
     lambda a, b: TF.cross_entropy((a @ b).reshape(-1, 6), torch.tensor(TARGETS.reshape(-1)),
                                   label_smoothing=0.1), [A, B]),
    ("linear-relu", lambda a, c, bb: F.linear(a, c.transpose(0, 1), bb).relu().sum(),
     lambda a, c, bb: TF.linear(a, c.T, bb).relu().sum(), [A[..., :4], C, BIAS]),
    ("embedding-repeats", lambda c: (F.embedding(IDS, c) ** 2).sum(),
     lambda c: (TF.embedding(torch.tensor(IDS), c) ** 2).sum(), [np.vstack([C, C[:2]])]),
    ("sdpa-mask", lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, mask=KEEP) ** 2).sum(),
     lambda q, k, v: (TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(KEEP)) ** 2).sum(),
     [Q, K, V]),
    ("sdpa-causal-bias",
     lambda q, k, v, p: (F.scaled_dot_product_attention(q, k, v, is_causal=True, bias=p, scale=1.0) ** 2).sum(),
     lambda q, k, v, p: (TF.scaled_dot_product_attention(
         q, k, v, attn_mask=p + torch.where(torch.ones(4, 4, dtype=torch.bool).tril(), 0.0, float("-inf")),
         scale=1.0) ** 2).sum(), [Q, K, V, POS_BIAS]),
    ("var-max-maximum-where", lambda a: (a.var(axis=1, ddof=1).sum() + a.max(axis=-1).sum()
                                         + mt.maximum(a, 0.1 * a).sum() + mt.where(A > 0, a, a * a).sum()),
     lambda a: (a.var(dim=1, correction=1).sum() + a.amax(dim=-1).sum()
                + torch.maximum(a, 0.1 * a).sum() + torch.where(torch.tensor(A > 0), a, a * a).sum()), [A]),
    ("shape-ops", lambda a: (mt.concatenate([a.permute(2, 0, 1), a.transpose(0, 2).transpose(1, 2)[:, :, ::-1]], axis=1)
                             .reshape(5, -1)[np.array([0, 0, 4])].sigmoid().sum()
                             + mt.stack([a, a * 2], axis=1)[:, 1].exp().mean()
                             + a.unsqueeze(0).expand(2, 3, 4, 5).abs().sum()
                             + (a * a + 1).sqrt().log().sum()),
     lambda a: (torch.cat([a.permute(2, 0, 1), a.transpose(0, 2).transpose(1, 2).flip(2)], dim=1)
                .reshape(5, -1)[torch.tensor([0, 0, 4])].sigmoid().sum()
                + torch.stack([a, a * 2], dim=1)[:, 1].exp().mean()
                + a.unsqueeze(0).expand(2, 3, 4, 5).abs().sum()
                + (a * a + 1).sqrt().log().sum()), [A]),
    ("division-and-power", lambda a, b: ((a / (b.abs() + 1.0)[:4]) ** 2).sum() + (1.0 / (a * a + 1)).sum(),
     lambda a, b: ((a / (b.abs() + 1.0)[:4]) ** 2).sum() + (1.0 / (a * a + 1)).sum(), [A, B.T]),
]


@pytest.mark.parametrize("name,ours,theirs,arrays", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("mode", ["reference", "auto"])
def test_matches_pytorch(name, ours, theirs, arrays, mode):
    mine = [mt.tensor(a.copy(), requires_grad=True) for a in arrays]
    ref = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    with mt.kernels.using(mode):
        out = ours(*mine)
        out.backward()
    expected = theirs(*ref)
    expected.backward()
    assert relative_error(out.data, expected.detach().numpy()) < 1e-10, name
    for i, (m, r) in enumerate(zip(mine, ref)):
        assert relative_error(m.grad, r.grad.numpy()) < 1e-10, f"{name}: gradient of input {i}"
