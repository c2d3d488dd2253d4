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

from benchmarks.harness import interleaved, median, median_ratio, rel_error, sync_for
from benchmarks.harness import peak_memory as device_peak_memory

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
# Every PyTorch contender, by its key in the results: the transformers twin (the model a user
# would pick), and the model written for speed (benchmarks/torch_contenders.py, the model a
# user who wants speed would write), eager and under torch.compile.
CONTENDERS = {"pytorch": "transformers twin", "pytorch-fast": "PyTorch fast, eager",
              "pytorch-compiled": "PyTorch fast, torch.compile"}
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
    params: list          # (our name, our Parameter, their torch Parameter, layout or rows of a fused one)
    device: str
    torch: object
    name: str = "pytorch"                 # the contender's key in the results (CONTENDERS)
    forward: object = None                # loss from the keyword batch; None: the twin's .loss
    eager: object = None                  # the uncompiled forward, for the float64 recheck
    optimizer_kind: str = "default"       # how torch.optim.AdamW runs: default (a loop), foreach, fused
    shares_state: bool = False            # the same weights and optimizer as another contender

    def ours_loss(self):
        return self.ours.loss(self.batch)

    def theirs_loss(self):
        if self.forward is not None:
            return self.forward(**self.torch_batch)
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


def our_optimizer(ours):
    """Our AdamW with the benchmark's hyperparameters, biases, norms and embeddings exempt from decay."""
    return optim.AdamW(ours, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                       weight_decay=ADAMW["weight_decay"], no_decay=optim.no_decay_names(ours))


def build_ours(family: str, cfg, batch: dict, device: str = "cpu", seed: int = 0) -> tuple:
    """(our freshly initialised model on ``device`` in training mode, its AdamW, the batch there)."""
    mt.manual_seed(seed)
    ours = models.build(cfg)
    if family == "bert":
        ours.bert.pooler = None        # BertForMaskedLM has no pooler; the MLM loss never uses it
    ours.to(device).train()
    return ours, our_optimizer(ours), {k: backend.to_device(v, device) for k, v in batch.items()}


def build_pair(family: str, cfg, batch: dict, device: str = "cpu", torch=None, seed: int = 0) -> Pair:
    """Our freshly initialised model and the transformers model holding the same weights."""
    import transformers

    ours, optimizer, device_batch = build_ours(family, cfg, batch, device, seed)
    with tempfile.TemporaryDirectory() as folder, quiet_transformers():
        hf.save_pretrained(ours, folder)
        theirs = getattr(transformers, TWIN_CLASSES[family]).from_pretrained(folder, dtype=torch.float32)
        theirs.loss_function       # picks its loss (with a one-time notice) here, while quiet
    tdev = "cpu" if device == "cpu" else "cuda"
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
    groups = [{"params": [p for n, _, p, _ in params if n not in no_decay], "weight_decay": ADAMW["weight_decay"]},
              {"params": [p for n, _, p, _ in params if n in no_decay], "weight_decay": 0.0}]
    torch_optimizer = torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
    return Pair(family, cfg, ours, theirs, optimizer, torch_optimizer, device_batch,
                twin_batch(family, batch, torch, tdev), params, device, torch)


def compiler_present() -> str | None:
    """The C++ compiler torch.compile's CPU backend (inductor) needs, or None when there is none."""
    import shutil

    return next((path for path in map(shutil.which, ("c++", "g++", "cc")) if path), None)


def build_fast_pair(base: Pair, compiled: bool = False, share: Pair | None = None) -> Pair:
    """Our model (``base``'s) against the PyTorch model written for speed holding its weights.

    ``compiled``: the model's loss under ``torch.compile`` (compiled on its first call).
    ``share``: another fast pair whose model, weights and optimizer this one uses too (the
    eager and compiled contenders train the same tensors; a step costs the same whatever
    the weights hold, and one copy less of a 124M-parameter model and its AdamW state
    fits a small machine).
    """
    from benchmarks import torch_contenders

    torch = base.torch
    if share is None:
        model = torch_contenders.build(base.family, base.config).to("cpu" if base.device == "cpu" else "cuda")
        mapping = torch_contenders.parameter_map(model, base.ours)
        torch_contenders.load_ours(mapping)
        groups = torch_contenders.decay_groups(mapping, optim.no_decay_names(base.ours), ADAMW["weight_decay"])
        optimizer, kind = torch_contenders.make_optimizer(groups, lr=ADAMW["lr"], betas=ADAMW["betas"],
                                                          eps=ADAMW["eps"])
    else:
        model, mapping, optimizer, kind = share.theirs, share.params, share.torch_optimizer, share.optimizer_kind
    batch = {k: backend.to_numpy(v) for k, v in base.batch.items()}
    torch_batch = torch_contenders.batch_for(base.family, batch, "cpu" if base.device == "cpu" else "cuda")
    forward = torch.compile(model) if compiled else model
    return Pair(base.family, base.config, base.ours, model, base.optimizer, optimizer, base.batch, torch_batch,
                mapping, base.device, torch, name="pytorch-compiled" if compiled else "pytorch-fast",
                forward=forward, eager=model, optimizer_kind=kind, shares_state=share is not None)


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
        if isinstance(layout, slice):                  # our tensor is these rows of a fused one
            theirs = theirs[layout]
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
    compiled = pair.forward
    if pair.eager is not None:
        pair.forward = pair.eager       # the same code uncompiled: float64 would compile it all again
    pair.ours.astype("float64")
    pair.theirs.to(torch.float64)
    try:
        yield
    finally:
        modeling_t5.T5LayerNorm.forward = original
        pair.forward = compiled
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


def step_functions(pairs, last: dict) -> dict:
    """{"ours": step, contender name: step, ...}: loss, backward, AdamW update, gradients cleared.
    ``pairs``: one Pair or a list of them sharing our model."""
    pairs = [pairs] if isinstance(pairs, Pair) else list(pairs)
    base = pairs[0]

    def ours():
        loss = base.ours_loss()
        loss.backward()
        base.optimizer.step()
        base.optimizer.zero_grad()
        last["ours"] = loss

    def contender(pair):
        def step():
            loss = pair.theirs_loss()
            loss.backward()
            pair.torch_optimizer.step()
            pair.torch_optimizer.zero_grad(set_to_none=True)
            last[pair.name] = loss
        return step
    return {"ours": ours, **{pair.name: contender(pair) for pair in pairs}}


def gate(pair: Pair) -> tuple[dict, str | None]:
    """(the agreement check, None) for a contender that may be timed; (check or {}, why) otherwise.

    A compiled contender whose compilation fails is *unavailable* (said, not a failure of
    the run); one that computes something else is *refused* (a failure of the run).
    """
    try:
        check = agreement(pair)
    except Exception as e:            # torch.compile raises many kinds: a missing compiler, a backend bug
        if not pair.name.endswith("compiled"):
            raise
        return {}, f"unavailable: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    return check, None if check["ok"] else refusal(check)


def bench_row(pairs: list[Pair], shape: str, repeat: int, warmup: int, peak_flop_per_s: float | None) -> dict:
    """Check every contender agrees with ours; time ours and those that do, interleaved, and
    report each one's speed and MFU, and ours against each and against the fastest."""
    base = pairs[0]
    batch = {k: backend.to_numpy(v) for k, v in base.batch.items()}
    tokens = tokens_per_step(base.family, batch)
    flops = model_flops(base.family, base.config, batch)
    row = {"family": base.family, "shape": shape, "batch": list(batch["input_ids"].shape),
           "params": base.ours.num_parameters(), "tokens_per_step": tokens, "model_flops": flops,
           "contenders": {}}
    if "decoder_input_ids" in batch:
        row["decoder_length"] = int(batch["decoder_input_ids"].shape[1])
    timed, refused = [], []
    for pair in pairs:
        check, why = gate(pair)
        entry = row["contenders"][pair.name] = {"label": CONTENDERS[pair.name], "optimizer": pair.optimizer_kind}
        if check:
            entry["agreement"] = summary(check)
        if why is None:
            timed.append(pair)
        elif why.startswith("unavailable"):
            entry["unavailable"] = why
        else:
            entry["refused"] = why
            refused.append(f"{pair.name}: {why}")
    first = next(iter(row["contenders"].values()))
    if "agreement" in first:
        row["agreement"] = first["agreement"]          # the first contender's (the twin's) check
    if refused:
        row["refused"] = "; ".join(refused)
    if not timed:
        return row
    last = {}
    times = interleaved(step_functions(timed, last), repeat, warmup=warmup,
                        sync=sync_for(base.device, base.torch))
    seconds = {k: median(v) for k, v in times.items()}
    row["seconds"] = seconds
    row["samples"] = times
    row["tokens_per_s"] = {k: tokens / s for k, s in seconds.items()}
    row["flop_per_s"] = {k: flops["total"] / s for k, s in seconds.items()}
    # ours against each contender, round by round: time(contender) / time(ours), above 1 ours is faster
    row["ratios"] = {p.name: median_ratio(times, p.name, "ours") for p in timed}
    fastest = min((p.name for p in timed), key=seconds.get)
    row["fastest"] = {"contender": fastest, "ratio": row["ratios"][fastest]}
    if "pytorch" in row["ratios"]:
        row["speed_ratio"] = row["ratios"]["pytorch"]
    if peak_flop_per_s:
        row["mfu"] = {k: flops["total"] / s / peak_flop_per_s for k, s in seconds.items()}
    # After the same number of AdamW steps from the same start a contender with its own
    # weights should still agree closely with ours: a check that the optimizers match too
    # (reported, not enforced: float32 rounding differences grow slowly over steps).
    # (Not for contenders that train one model together: it took the steps of both.)
    a = float(last["ours"].item())
    row["loss_after_steps"] = {}
    shared = {id(p.theirs) for p in timed if p.shares_state}
    for p in timed:
        if id(p.theirs) not in shared:
            b = float(last[p.name].item())
            row["loss_after_steps"][p.name] = {"steps": repeat + warmup, "ours": a, "theirs": b,
                                               "rel": abs(a - b) / max(abs(b), 1e-30)}
    if timed and timed[0].device == "cuda":                  # GPU memory: one more step each
        memory = device_peak_memory(step_functions(timed, last), "cuda", timed[0].torch)
        if memory:
            row["peak_bytes"] = memory
    return row


def bench_pair(pair: Pair, shape: str, repeat: int, warmup: int, peak_flop_per_s: float | None) -> dict:
    """``bench_row`` of ours against one contender."""
    return bench_row([pair], shape, repeat, warmup, peak_flop_per_s)


def default_contenders(device: str, mode: str) -> list[str]:
    """The contenders a run times unless told: on the CPU the twin and the fast model, eager,
    and compiled too where a C++ compiler is present (not in the tiny mode: compiling takes
    longer than the whole tiny run); on a GPU the twin."""
    if device != "cpu":
        return ["pytorch"]
    names = ["pytorch", "pytorch-fast"]
    if mode != "tiny" and compiler_present():
        names.append("pytorch-compiled")
    return names


def build_contenders(family: str, cfg, batch: dict, device: str, torch, names) -> list[Pair]:
    """One Pair per contender in ``names``, all sharing one model of ours."""
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names:
        raise ValueError(f"contenders must be some of {list(CONTENDERS)}, got {list(names)}")
    if "pytorch" in names:
        base = build_pair(family, cfg, batch, device, torch)
    else:                             # no twin: one model less in memory
        ours, optimizer, device_batch = build_ours(family, cfg, batch, device)
        base = Pair(family, cfg, ours, None, optimizer, None, device_batch, {}, [], device, torch)
    pairs = [base] if "pytorch" in names else []
    fast = None
    for name in ("pytorch-fast", "pytorch-compiled"):
        if name in names:
            pair = build_fast_pair(base, compiled=name == "pytorch-compiled", share=fast)
            fast = fast or pair
            pairs.append(pair)
    if not pairs:
        raise ValueError(f"no PyTorch contender to time: {list(names)} names none of {list(CONTENDERS)}")
    return pairs


def release_memory(torch=None) -> None:
    """Give back what the last row's models held before the next row builds its own: the
    objects (a cycle collection), torch.compile's caches (they keep the compiled model and
    its parameters alive), and the C heap's free pages (glibc keeps freed blocks below its
    mmap threshold, up to 32 MiB each, for reuse instead of returning them to the system)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    dynamo = getattr(getattr(torch, "_dynamo", None), "reset", None)
    if dynamo is not None:
        dynamo()
        gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)


def run(device: str, shapes, repeat: int, warmup: int = 1, torch=None, families=FAMILIES,
        peak_flop_per_s: float | None = None, batch_size: int | None = None, contenders=("pytorch",),
        memory: bool = False, threads: int | None = None) -> list[dict]:
    """Every family at every shape in ``shapes``; one row each, ours against ``contenders``.
    ``batch_size`` replaces the shapes' own (a GPU wants more than the 4 sequences of the real
    shape). ``memory``: also each one's peak memory, every contender alone in its own process."""
    rows = []
    for shape in shapes:
        configs, shape_batch, seq_len = SHAPES[shape]
        for family in families:
            cfg = configs[family]
            batch = make_batch(family, cfg, batch_size or shape_batch, seq_len)
            pairs = build_contenders(family, cfg, batch, device, torch, contenders)
            row = bench_row(pairs, shape, repeat, warmup, peak_flop_per_s)
            del pairs
            release_memory(torch)
            if memory and device == "cpu":
                names = ["ours"] + [k for k, c in row["contenders"].items() if "refused" not in c
                                    and "unavailable" not in c]
                row["memory"] = {name: peak_memory(family, shape, name, threads) for name in names}
            rows.append(row)
    return rows


# =======================================================================================
# Peak memory: every contender alone in a fresh process
# =======================================================================================

def _rss() -> tuple[int | None, int | None]:
    """(resident set size, its peak so far) of this process in bytes, from /proc (Linux), or
    the peak alone from getrusage elsewhere."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return None, peak if sys.platform == "darwin" else peak * 1024       # bytes there, KiB on Linux


def _reset_peak() -> bool:
    """Restart the peak RSS count from the present RSS (Linux: /proc/self/clear_refs); False
    where this system cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(family: str, shape: str, contender: str, threads: int | None, steps: int = 2) -> dict:
    """In a fresh process: import everything, note the RSS, build one contender, train it.

    Returns the RSS after the imports, the peak RSS over the whole run, and, where the
    system can restart the count, the peak of ``steps`` steps after a first one (the steady
    state: the first step also holds one-time costs, Numba's and torch.compile's compilers
    among them). Memory does not depend on what the weights hold, so every contender starts
    from its own initialisation; the batch is the one the timed run uses.
    """
    import gc

    import torch
    import transformers

    from benchmarks import harness, torch_contenders

    twin_class = getattr(transformers, TWIN_CLASSES[family])      # its module imported here, before the baseline
    harness.set_threads(threads, torch)
    configs, batch_size, seq_len = SHAPES[shape]
    cfg = configs[family]
    batch = make_batch(family, cfg, batch_size, seq_len)
    gc.collect()
    baseline, _ = _rss()
    if contender == "ours":
        ours, optimizer, device_batch = build_ours(family, cfg, batch)

        def step():
            ours.loss(device_batch).backward()
            optimizer.step()
            optimizer.zero_grad()
    else:
        if contender == "pytorch":
            with tempfile.TemporaryDirectory() as folder, quiet_transformers():
                ours = build_ours(family, cfg, batch)[0]
                hf.save_pretrained(ours, folder)
                del ours
                gc.collect()
                _reset_peak()             # our model is gone: the twin reads its weights from disk
                model = twin_class.from_pretrained(folder, dtype=torch.float32).train()
            kwargs = twin_batch(family, batch, torch, "cpu")

            def loss():
                return model(**kwargs).loss
            optimizer = torch.optim.AdamW(model.parameters(), lr=ADAMW["lr"])
        else:
            model = torch_contenders.build(family, cfg)
            kwargs = torch_contenders.batch_for(family, batch)
            forward = torch.compile(model) if contender == "pytorch-compiled" else model

            def loss():
                return forward(**kwargs)
            optimizer, _ = torch_contenders.make_optimizer([{"params": list(model.parameters())}], lr=ADAMW["lr"])

        def step():
            loss().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    step()
    steady = None
    if _reset_peak():
        for _ in range(steps):
            step()
        steady = _rss()[1] - baseline
    else:
        for _ in range(steps):
            step()
    return {"baseline": baseline, "peak": _rss()[1] - baseline, "steady": steady, "steps": 1 + steps}


def peak_memory(family: str, shape: str, contender: str, threads: int | None, timeout: float = 1800) -> dict:
    """``memory_child`` in a fresh Python process (so no other model, allocator cache or
    compiled kernel of this process counts), its result read from the last line it prints."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    spec = json.dumps({"family": family, "shape": shape, "contender": contender, "threads": threads})
    done = subprocess.run([sys.executable, "-m", "benchmarks.train_steps", spec], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"peak memory of {contender} ({family} {shape}): the measuring process exited with "
                           f"status {done.returncode}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# =======================================================================================
# The table
# =======================================================================================

def _memory_cell(row: dict, name: str) -> str:
    m = row.get("memory", {}).get(name)
    if not m:
        return "-"
    steady = "" if m.get("steady") is None else f" ({m['steady'] / 2**20:,.0f})"
    return f"{m['peak'] / 2**20:,.0f}{steady}"


def table(rows: list[dict], peak: dict | None = None) -> str:
    """A markdown table of the training steps, one line per contender, with ours first, and
    refusals spelled out below it."""
    lines = ["| model | shape | params | tokens/step | contender | tok/s (min-max) | ours / this | MFU "
             "| peak (steady) MiB | loss rel. diff | worst grad rel. diff |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['family']} | {r['shape']} | {r['params'] / 1e6:.2f}M | {r['tokens_per_step']} |"
        spread = {k: f"{r['tokens_per_step'] / max(v):,.0f}-{r['tokens_per_step'] / min(v):,.0f}"
                  for k, v in r.get("samples", {}).items()}
        mfu = r.get("mfu", {})
        if "seconds" in r:
            lines.append(f"{head} ours | {r['tokens_per_s']['ours']:,.0f} ({spread['ours']}) | - | "
                         + (f"{mfu['ours']:.1%}" if mfu else "-") + f" | {_memory_cell(r, 'ours')} | - | - |")
        for name, c in r["contenders"].items():
            a = c.get("agreement")
            agree = (f"{a['loss_rel']:.1e} | {a['worst_grad_rel']:.1e}" + (" (f64 ok)" if "note" in a else "")
                     if a else "- | -")
            label = c["label"] + (f" (AdamW {c['optimizer']})" if c["optimizer"] != "default" else "")
            if "refused" in c or "unavailable" in c:
                word = "REFUSED" if "refused" in c else "unavailable"
                lines.append(f"{head} {label} | {word} | - | - | - | {agree} |")
                continue
            best = " (fastest)" if r["fastest"]["contender"] == name and len(r["ratios"]) > 1 else ""
            lines.append(f"{head} {label} | {r['tokens_per_s'][name]:,.0f} ({spread[name]}) | "
                         f"{r['ratios'][name]:.2f}x{best} | " + (f"{mfu[name]:.1%}" if mfu else "-")
                         + f" | {_memory_cell(r, name)} | {agree} |")
    lines.append("")
    lines.append("ours / this: median over interleaved rounds of time(this contender's step) / time(our step); "
                 "above 1 ours is faster.")
    if any("memory" in r for r in rows):
        lines.append("peak MiB: each contender alone in a fresh process, peak RSS minus the RSS after the imports; "
                     "(steady): the peak of the steps after the first (without one-time compilation).")
    if peak:
        lines.append(f"MFU: model FLOPs per second / the measured float32 matmul peak "
                     f"({peak['flop_per_s'] / 1e9:.1f} GFLOP/s, {peak['source']}).")
    for r in rows:
        where = f"{r['family']} {r['shape']}"
        if "fastest" in r:
            f = r["fastest"]
            lines.append(f"{where}: ours / the fastest contender ({CONTENDERS[f['contender']]}) = {f['ratio']:.2f}x")
        for name, c in r["contenders"].items():
            if "refused" in c:
                lines.append(f"REFUSED {where} / {name}: {c['refused']}")
            elif "unavailable" in c:
                lines.append(f"{where} / {name} {c['unavailable']}")
            elif "note" in c.get("agreement", {}):
                lines.append(f"(f64 ok) {where} / {name}: {c['agreement']['note']}")
        if "peak_bytes" in r:
            lines.append(f"GPU memory at the peak of one step, {where}: "
                         + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in r["peak_bytes"].items()))
    return "\n".join(lines)


if __name__ == "__main__":        # one peak-memory measurement (peak_memory runs this in a fresh process)
    import json
    import sys

    print(json.dumps(memory_child(**json.loads(sys.argv[1]))))
