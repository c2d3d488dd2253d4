"""Training steps against a PyTorch twin: GPT, BERT and T5, each with AdamW, at two shapes.

One step is what the training loop does: the model's loss on a batch from its objective
(causal LM, masked LM, span corruption), the backward pass, an AdamW update, gradients
cleared. Its twin is the ``transformers`` model of the same config (GPT2LMHeadModel,
BertForMaskedLM, T5ForConditionalGeneration) loaded with *our* weights through
``hf.save_pretrained`` -- the model a user would pick instead -- trained by
``torch.optim.AdamW`` with the same hyperparameters and the same parameters exempt from
weight decay.

**Agreement before speed.** Before any timing the pair runs one forward and backward on
the same batch from the same weights. The losses must agree to 1e-5 (relative) and every
gradient to ||ours - theirs|| / ||theirs|| <= 1e-4, tensor by tensor (float32). A pair that
disagrees is reported as refused, with the worst tensor named, and no speed is given: a
speed figure for a model that computes something else is meaningless.

Two refinements keep the check exact rather than lucky. A gradient that is zero in exact
arithmetic (``EXACT_ZEROS``: BERT's key bias) holds only rounding noise on both sides, so
it must be tiny instead of relatively close. And a float32 failure is checked again in
float64 from the same weights: a ReLU pre-activation within rounding of zero can take the
other branch on one side, which moves a whole layer's gradient by ~1e-3 although both
compute the same function; in float64 that is a billion times less likely, while a model
that differs still differs. The pair is accepted only if float64 agrees 1000x tighter than the float32 bar,
and the row says so, with how far each side's float32 gradients are from float64.

**Speed.** Steps of the two alternate (ours, theirs, ours, theirs, ...) after a warm-up;
tokens/s is tokens per step over the median step time, and the ratio is the median over
rounds of time(theirs) / time(ours) (above 1: ours is faster).

**Model FLOPs and MFU.** The count is ``scaling.step_flops``, the one account of a step's
cost. A matrix product with a weight of P entries costs 2 P FLOPs per
token forward and 4 P backward (the gradients of the input and of the weight): 6 P per
token. Attention adds its two products per layer, QK^T and PV, which have no weights:
forward 4 T_q T_k d_attn per sequence, times 3 for forward + backward, counting every
(query, key) pair even under the causal mask (the PaLM convention). Embedding lookups,
norms, activations and the optimizer are not counted: MFU measures how much of the step
time is spent doing the matrix products the model needs. MFU = model FLOPs per second /
the float32 matmul peak measured in the same run (the better of the two BLAS libraries).
The same count serves both sides, so their MFUs compare as their speeds do; BERT's twin
computes the vocabulary projection at every position while ours computes it only at the
~15% labelled ones, and the count charges only the labelled ones (the work needed).

Tokens per step: batch x sequence for GPT and BERT; batch x (encoder + decoder lengths)
for T5.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile

import numpy as np

import minitransformer as mt
from minitransformer import backend, hf, models, objectives, optim, scaling
from minitransformer.hf.architectures import CONV1D, family_of_model

from benchmarks.harness import interleaved, median, median_ratio, peak_memory, rel_error, sync_for

LOSS_TOLERANCE = 1e-5        # relative difference of the two losses
GRAD_TOLERANCE = 1e-4        # ||ours - theirs|| / ||theirs||, per gradient tensor
ZERO_TOLERANCE = 1e-6        # an exactly-zero gradient: its norm / the norm of all gradients
# (loss, gradient, exact zero) tolerances per precision; float64 only settles a float32 failure
TOLERANCES = {"float32": (LOSS_TOLERANCE, GRAD_TOLERANCE, ZERO_TOLERANCE), "float64": (1e-9, 1e-7, 1e-12)}
# Gradients that are zero in exact arithmetic, so that both sides hold only rounding noise
# and a relative error between two noises means nothing. Each is checked to be that small
# instead (a real gradient there would be a bug on one side).
EXACT_ZEROS = {
    r"attn\.k\.bias$": "the key bias adds q.b_k to every score of a query's row, and softmax is "
                        "unchanged by adding one number to a whole row",
}
FAMILIES = ("gpt", "bert", "t5")
TWIN_CLASSES = {"gpt": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "t5": "T5ForConditionalGeneration"}
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

# The "mini" shape: d_model 256, 4 layers (T5: 4 + 4), 4 heads, d_ff 1024, vocabulary 4096.
MINI = {
    "gpt": models.GPTConfig(vocab_size=4096, n_positions=128, n_embd=256, n_layer=4, n_head=4,
                            n_inner=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "bert": models.BERTConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=4,
                              num_attention_heads=4, intermediate_size=1024,
                              max_position_embeddings=128, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0),
    "t5": models.T5Config(vocab_size=4096, d_model=256, d_kv=64, d_ff=1024, num_layers=4,
                          num_decoder_layers=4, num_heads=4, dropout_rate=0.0),
}
# A shape only for exercising the code (the test suite): seconds, not meaningful speeds.
MICRO = {
    "gpt": models.GPTConfig(vocab_size=256, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "bert": models.BERTConfig(vocab_size=256, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0),
    "t5": models.T5Config(vocab_size=256, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                          dropout_rate=0.0),
}
# The "real" shape: the sizes people train, GPT-2 small (124M), BERT-base (110M) and T5-small
# (60M) from their presets, with dropout off as in the other shapes, batch 4 x sequence 256.
# The CPU and the GPU benchmarks share this table.
REAL = {
    "gpt": dataclasses.replace(models.preset("gpt2"), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "bert": dataclasses.replace(models.preset("bert-base"), hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0),
    "t5": dataclasses.replace(models.preset("t5-small"), dropout_rate=0.0),
}
# shape name -> (config per family, batch size, sequence length)
SHAPES = {
    "tiny": ({f: models.preset(f"{f}-tiny") for f in FAMILIES}, 8, 128),
    "mini": (MINI, 8, 128),
    "real": (REAL, 4, 256),
    "micro": (MICRO, 2, 16),
}


# =======================================================================================
# Batches, from the family's own objective over a random token stream
# =======================================================================================

def make_batch(family: str, cfg, batch_size: int, seq_len: int, seed: int = 0) -> dict:
    """One batch of int64 NumPy arrays, as the family's pre-training objective builds it."""
    rng = np.random.default_rng(seed)
    v, n = cfg.vocab_size, 4 * batch_size * seq_len
    if family == "gpt":                                     # eos 0
        obj = objectives.CLMObjective(rng.integers(1, v, n), seq_len, eos_id=0, seed=seed)
    elif family == "bert":                                  # pad 0, [CLS] 1, [SEP] 2, [MASK] 3
        obj = objectives.MLMObjective(rng.integers(4, v, n), seq_len, v, mask_id=3, cls_id=1,
                                      sep_id=2, pad_id=0, seed=seed)
    else:                                                   # pad 0, eos 1; sentinels from the top
        obj = objectives.SpanCorruptionObjective(rng.integers(2, v // 2, n), seq_len, v, eos_id=1,
                                                 pad_id=0, seed=seed)
    batch = obj.batch(0, batch_size)
    if not (batch["labels"] != objectives.IGNORE_INDEX).any():
        raise ValueError(f"{family} batch of {batch_size} x {seq_len} has no labelled position; "
                         "use a longer sequence or a larger batch")
    return batch


def tokens_per_step(family: str, batch: dict) -> int:
    """Input tokens of a step: the encoder's and, for an encoder-decoder, the decoder's."""
    return int(sum(batch[k].size for k in ("input_ids", "decoder_input_ids") if k in batch))


def model_flops(family: str, cfg, batch: dict) -> dict:
    """Model FLOPs of one training step (forward + backward), as the module docstring counts:
    ``scaling.step_flops``, the account ``minitransformer info`` and the scaling study use,
    with the output layer charged for this batch's logit rows (BERT: its labelled positions)."""
    b, t = batch["input_ids"].shape
    dec = batch.get("decoder_input_ids")
    td = None if dec is None else dec.shape[1]
    labelled = int((batch["labels"] != objectives.IGNORE_INDEX).sum())
    rows = round(scaling.logit_rows(cfg, b, t, td, mlm_fraction=labelled / (b * t)))   # whole rows
    flops = scaling.step_flops(cfg, b, t, td, head_rows=rows)
    return {"weights": flops["weights"], "attention": flops["attention"], "total": flops["total"]}


# =======================================================================================
# The pair: our model and its transformers twin, with their optimizers
# =======================================================================================

@contextlib.contextmanager
def quiet_transformers():
    """Load without progress bars or notices, then put transformers' settings back."""
    from transformers.utils import logging as tlog

    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


@dataclasses.dataclass
class Pair:
    """Our model and its twin, optimizers, the batch on the device, and the parameter map."""

    family: str
    config: object
    ours: object
    theirs: object
    optimizer: object
    torch_optimizer: object
    batch: dict
    torch_batch: dict
    params: list          # (our name, our Parameter, their torch Parameter, layout)
    device: str
    torch: object

    def ours_loss(self):
        return self.ours.loss(self.batch)

    def theirs_loss(self):
        return self.theirs(**self.torch_batch).loss

    def zero_grad(self):
        self.optimizer.zero_grad()
        self.torch_optimizer.zero_grad(set_to_none=True)


def twin_batch(family: str, batch: dict, torch, device: str) -> dict:
    """The keyword arguments the transformers model takes for ``batch``, as torch tensors."""
    keys = {"gpt": ("input_ids", "attention_mask", "labels"),
            "bert": ("input_ids", "attention_mask", "token_type_ids", "labels"),
            "t5": ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels")}
    return {k: torch.from_numpy(batch[k]).to(device) for k in keys[family] if k in batch}


def build_pair(family: str, cfg, batch: dict, device: str = "cpu", torch=None, seed: int = 0) -> Pair:
    """Our freshly initialised model and the transformers model holding the same weights."""
    import transformers

    mt.manual_seed(seed)
    ours = models.build(cfg)
    if family == "bert":
        ours.bert.pooler = None        # BertForMaskedLM has no pooler; the MLM loss never uses it
    with tempfile.TemporaryDirectory() as folder, quiet_transformers():
        hf.save_pretrained(ours, folder)
        theirs = getattr(transformers, TWIN_CLASSES[family]).from_pretrained(folder, dtype=torch.float32)
        theirs.loss_function       # picks its loss (with a one-time notice) here, while quiet
    tdev = "cpu" if device == "cpu" else "cuda"
    ours.to(device).train()
    theirs.to(tdev).train()

    rows = family_of_model(ours).table(ours)
    own = dict(ours.named_parameters())
    params = [(name, own[name], theirs.get_parameter(key), layout) for name, key, layout in rows]
    covered = {id(p) for _, _, p, _ in params}
    left = [n for n, p in theirs.named_parameters() if id(p) not in covered]
    if left or len(params) != len(own):
        raise RuntimeError(f"{family}: the parameter map does not cover both models (twin parameters "
                           f"left out: {left[:5]}; ours mapped {len(params)} of {len(own)})")

    no_decay = optim.no_decay_names(ours)
    optimizer = optim.AdamW(ours, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"], no_decay=no_decay)
    groups = [{"params": [p for n, _, p, _ in params if n not in no_decay], "weight_decay": ADAMW["weight_decay"]},
              {"params": [p for n, _, p, _ in params if n in no_decay], "weight_decay": 0.0}]
    torch_optimizer = torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
    device_batch = {k: backend.to_device(v, device) for k, v in batch.items()}
    return Pair(family, cfg, ours, theirs, optimizer, torch_optimizer, device_batch,
                twin_batch(family, batch, torch, tdev), params, device, torch)


def gradients(pair: Pair) -> tuple[float, float, dict]:
    """(our loss, their loss, {our name: (our gradient, their gradient)}) from one forward +
    backward of each on the pair's batch; gradients in our layout, cleared after."""
    pair.zero_grad()
    loss = pair.ours_loss()
    loss.backward()
    their_loss = pair.theirs_loss()
    their_loss.backward()
    grads = {}
    for name, p, q, layout in pair.params:
        ours = backend.to_numpy(p.grad) if p.grad is not None else np.zeros(p.shape)
        theirs = q.grad.detach().cpu().numpy() if q.grad is not None else np.zeros(tuple(q.shape))
        grads[name] = (ours.T if layout == CONV1D else ours, theirs)
    pair.zero_grad()
    return float(loss.item()), float(their_loss.item()), grads


def compare(loss_ours: float, loss_theirs: float, grads: dict, dtype: str = "float32") -> dict:
    """The agreement verdict for two losses and their gradients, at ``dtype``'s tolerances."""
    loss_tol, grad_tol, zero_tol = TOLERANCES[dtype]
    loss_rel = abs(loss_ours - loss_theirs) / max(abs(loss_theirs), 1e-30)
    total = np.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for _, t in grads.values()))
    errors, zeros = {}, {}
    for name, (ours, theirs) in grads.items():
        if any(re.search(pattern, name) for pattern in EXACT_ZEROS):
            zeros[name] = max(np.linalg.norm(ours), np.linalg.norm(theirs)) / max(total, 1e-30)
        else:
            errors[name] = rel_error(ours, theirs)
    worst = max(errors, key=errors.get)
    ok = bool(loss_rel <= loss_tol and errors[worst] <= grad_tol and all(z <= zero_tol for z in zeros.values()))
    return {"dtype": dtype, "loss_ours": loss_ours, "loss_pytorch": loss_theirs, "loss_rel": loss_rel,
            "worst_grad": worst, "worst_grad_rel": errors[worst],
            "largest_exact_zero": max(zeros.values(), default=0.0),
            "grad_rel": errors, "exact_zero_rel": zeros, "ok": ok}


@contextlib.contextmanager
def in_float64(pair: Pair):
    """Both models in float64 for the block, then back to float32 (an exact round trip).

    transformers' T5LayerNorm computes its mean square in float32 whatever the model's
    dtype (deliberately, for half precision); inside the block it computes in the input's
    precision, the same formula without that rounding, so float64 means float64 throughout.
    """
    import torch
    from transformers.models.t5 import modeling_t5

    def forward(self, h):
        variance = h.pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(variance + self.variance_epsilon))
    original = modeling_t5.T5LayerNorm.forward
    modeling_t5.T5LayerNorm.forward = forward
    pair.ours.astype("float64")
    pair.theirs.to(torch.float64)
    try:
        yield
    finally:
        modeling_t5.T5LayerNorm.forward = original
        pair.ours.astype("float32")
        pair.theirs.to(torch.float32)


def agreement(pair: Pair) -> dict:
    """Do the two compute the same thing? The float32 verdict, and where needed the float64 one.

    First the check as timed, in float32 (``compare``). A float32 disagreement has two
    possible causes: the models differ, or float32 rounding met a point where the function
    is not smooth -- a ReLU pre-activation within rounding of zero takes the other branch
    on one side, and that single entry moves a layer's gradient by ~1e-3 (T5 v1.0 does
    this). So a pair that fails in float32 is checked again in float64 from the same
    weights, through the same code (kernels included), where the two causes separate: a
    different model still differs, rounding does not (tolerances 1000x tighter than
    float32's). Agreement there means the two compute
    the same function, and the float32 gap is each side's own rounding: the result then
    also says how far each side's float32 gradients are from float64
    (``float32_vs_float64``), which shows whose rounding it was.
    """
    a, b, grads32 = gradients(pair)
    check = compare(a, b, grads32, "float32")
    if check["ok"]:
        return check
    with in_float64(pair):
        a64, b64, grads64 = gradients(pair)
    wide = compare(a64, b64, grads64, "float64")
    check["float64"] = wide
    if wide["ok"]:
        own = {side: max(rel_error(g32[i], grads64[n][i]) for n, g32 in grads32.items()
                         if n not in wide["exact_zero_rel"])
               for i, side in enumerate(("ours", "pytorch"))}
        check["float32_vs_float64"] = own
        check["ok"] = True
        check["note"] = (f"float32 gradients differ by {check['worst_grad_rel']:.1e} ({check['worst_grad']}), "
                         f"but float64 agrees to {wide['worst_grad_rel']:.1e}: rounding, not a different model "
                         f"(float32 vs float64: ours {own['ours']:.1e}, PyTorch {own['pytorch']:.1e})")
    return check


def refusal(check: dict) -> str:
    """Why a pair is not timed, in one line."""
    parts = []
    if not check["loss_rel"] <= LOSS_TOLERANCE:
        parts.append(f"losses differ by {check['loss_rel']:.2e} relative (ours {check['loss_ours']:.6f}, "
                     f"PyTorch {check['loss_pytorch']:.6f}; at most {LOSS_TOLERANCE:g} allowed)")
    if not check["worst_grad_rel"] <= GRAD_TOLERANCE:
        bad = sum(1 for e in check["grad_rel"].values() if not e <= GRAD_TOLERANCE)
        parts.append(f"{bad} gradient(s) differ, worst {check['worst_grad']} by "
                     f"{check['worst_grad_rel']:.2e} (at most {GRAD_TOLERANCE:g} allowed)")
    nonzero = [n for n, z in check["exact_zero_rel"].items() if not z <= ZERO_TOLERANCE]
    if nonzero:
        parts.append(f"gradient(s) that must be zero are not: {', '.join(nonzero[:3])} "
                     f"(norm {check['largest_exact_zero']:.2e} of the total; at most {ZERO_TOLERANCE:g})")
    wide = check.get("float64")
    if wide is not None:
        parts.append(f"in float64 too (loss {wide['loss_rel']:.1e}, worst gradient {wide['worst_grad']} "
                     f"{wide['worst_grad_rel']:.1e})")
    return "; ".join(parts) + ": the two compute different things, so no speed is reported"


def summary(check: dict) -> dict:
    """The agreement without the per-tensor tables (those stay out of the JSON)."""
    out = {k: v for k, v in check.items() if k not in ("grad_rel", "exact_zero_rel", "float64")}
    if "float64" in check:
        out["float64"] = summary(check["float64"])
    return out


def step_functions(pair: Pair, last: dict) -> dict:
    """{"ours": step, "pytorch": step}: loss, backward, AdamW update, gradients cleared."""
    def ours():
        loss = pair.ours_loss()
        loss.backward()
        pair.optimizer.step()
        pair.optimizer.zero_grad()
        last["ours"] = loss

    def pytorch():
        loss = pair.theirs_loss()
        loss.backward()
        pair.torch_optimizer.step()
        pair.torch_optimizer.zero_grad(set_to_none=True)
        last["pytorch"] = loss
    return {"ours": ours, "pytorch": pytorch}


def bench_pair(pair: Pair, shape: str, repeat: int, warmup: int, peak_flop_per_s: float | None) -> dict:
    """Check the pair agrees; if it does, time interleaved steps and report speed and MFU."""
    batch = {k: backend.to_numpy(v) for k, v in pair.batch.items()}
    tokens = tokens_per_step(pair.family, batch)
    flops = model_flops(pair.family, pair.config, batch)
    row = {"family": pair.family, "shape": shape, "batch": list(batch["input_ids"].shape),
           "params": pair.ours.num_parameters(), "tokens_per_step": tokens, "model_flops": flops}
    if "decoder_input_ids" in batch:
        row["decoder_length"] = int(batch["decoder_input_ids"].shape[1])
    check = agreement(pair)
    row["agreement"] = summary(check)
    if not check["ok"]:
        row["refused"] = refusal(check)
        return row
    last = {}
    times = interleaved(step_functions(pair, last), repeat, warmup=warmup,
                        sync=sync_for(pair.device, pair.torch))
    seconds = {k: median(v) for k, v in times.items()}
    row["seconds"] = seconds
    row["samples"] = times
    row["tokens_per_s"] = {k: tokens / s for k, s in seconds.items()}
    row["flop_per_s"] = {k: flops["total"] / s for k, s in seconds.items()}
    row["speed_ratio"] = median_ratio(times, "pytorch", "ours")
    if peak_flop_per_s:
        row["mfu"] = {k: flops["total"] / s / peak_flop_per_s for k, s in seconds.items()}
    # After the same number of AdamW steps from the same start the two should still agree
    # closely: a check that the optimizers match too (reported, not enforced: float32
    # rounding differences grow slowly over steps).
    a, b = float(last["ours"].item()), float(last["pytorch"].item())
    row["loss_after_steps"] = {"steps": repeat + warmup, "ours": a, "pytorch": b,
                               "rel": abs(a - b) / max(abs(b), 1e-30)}
    memory = peak_memory(step_functions(pair, last), pair.device, pair.torch)   # one more step each
    if memory:
        row["peak_bytes"] = memory
    return row


def run(device: str, shapes, repeat: int, warmup: int = 1, torch=None, families=FAMILIES,
        peak_flop_per_s: float | None = None, batch_size: int | None = None) -> list[dict]:
    """Every family at every shape in ``shapes``; one row each. ``batch_size`` replaces the
    shapes' own (a GPU wants more than the 4 sequences of the real shape)."""
    rows = []
    for shape in shapes:
        configs, shape_batch, seq_len = SHAPES[shape]
        batch_size = batch_size or shape_batch
        for family in families:
            cfg = configs[family]
            batch = make_batch(family, cfg, batch_size, seq_len)
            pair = build_pair(family, cfg, batch, device, torch)
            rows.append(bench_pair(pair, shape, repeat, warmup, peak_flop_per_s))
            del pair
    return rows


def table(rows: list[dict], peak: dict | None = None) -> str:
    """A markdown table of the training steps, with refusals spelled out below it."""
    lines = ["| model | shape | params | tokens/step | ours tok/s (min-max) | PyTorch tok/s (min-max) | ours / PyTorch "
             "| ours MFU | PyTorch MFU | loss rel. diff | worst grad rel. diff |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a = r["agreement"]
        agree = f"{a['loss_rel']:.1e} | {a['worst_grad_rel']:.1e}" + (" (f64 ok)" if "note" in a else "")
        head = f"| {r['family']} | {r['shape']} | {r['params'] / 1e6:.2f}M | {r['tokens_per_step']} |"
        if "refused" in r:
            lines.append(f"{head} REFUSED | REFUSED | - | - | - | {agree} |")
            continue
        tps, mfu = r["tokens_per_s"], r.get("mfu", {})
        spread = {k: f"{r['tokens_per_step'] / max(v):,.0f}-{r['tokens_per_step'] / min(v):,.0f}"
                  for k, v in r["samples"].items()}
        lines.append(f"{head} {tps['ours']:,.0f} ({spread['ours']}) | {tps['pytorch']:,.0f} ({spread['pytorch']}) | "
                     f"{r['speed_ratio']:.2f}x | "
                     + (f"{mfu['ours']:.1%} | {mfu['pytorch']:.1%} |" if mfu else "- | - |")
                     + f" {agree} |")
    lines.append("")
    lines.append("ours / PyTorch: median over interleaved rounds of time(PyTorch step) / time(our step); "
                 "above 1 ours is faster.")
    if peak:
        lines.append(f"MFU: model FLOPs per second / the measured float32 matmul peak "
                     f"({peak['flop_per_s'] / 1e9:.1f} GFLOP/s, {peak['source']}).")
    for r in rows:
        if "refused" in r:
            lines.append(f"REFUSED {r['family']} {r['shape']}: {r['refused']}")
        elif "note" in r["agreement"]:
            lines.append(f"(f64 ok) {r['family']} {r['shape']}: {r['agreement']['note']}")
        if "peak_bytes" in r:
            lines.append(f"GPU memory at the peak of one step, {r['family']} {r['shape']}: "
                         + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in r["peak_bytes"].items()))
    return "\n".join(lines)
