"""Where one training step spends its time: ours op by op, against PyTorch's profiler.

    python -m benchmarks --only profile                  # GPT mini on the CPU
    python -m benchmarks --only profile --profile bert-tiny
    python -m benchmarks --only profile --profile bert-real:pytorch-fast --quick

Two views of the same step (a pair of ``train_steps``: our model and its transformers
twin, or with ``:pytorch-fast`` the PyTorch model written for speed; same weights, same
batch, AdamW):

1. **Phases**, uninstrumented: forward (the loss), backward, optimizer update; the median
   of interleaved steps, so these are the true costs.
2. **Ops**, instrumented: ours by a timer the autograd engine calls around every
   ``Function``'s forward and backward (``mt.autograd.observe``; so a row is one op kind,
   e.g. ``Linear.backward``; the rest of the forward + backward wall time is the engine
   and Python: graph recording, the
   topological sort, module calls, gradient accumulation); PyTorch's by
   ``torch.profiler`` (self CPU time of each aten op; the autograd engine's per-node
   wrappers are their own category). Both are grouped into the same categories (matmul,
   attention, norm, activation, ...) so the gap can be read category by category.
   Every figure is a median over steps, after a warm-up step. Instrumentation adds a
   little time to both; the phases above are the reference.
"""
from __future__ import annotations

import re
import time
from collections import defaultdict

import minitransformer as mt

from benchmarks.harness import median, sync_for
from benchmarks.train_steps import SHAPES, build_fast_pair, build_pair, make_batch

# The PyTorch side a profile can set against ours: the transformers twin, or the model
# written for speed (eager: the profiler reads no compiled graph op by op).
PROFILE_CONTENDERS = ("pytorch", "pytorch-fast")

# (category, pattern over our Function class names, pattern over PyTorch op names).
# Our fused products count as matmul: ActivationLinear (activation + output projection,
# the activation a small part) and LinearCrossEntropy (the language-model head and its
# cross-entropy, the products most of it).
CATEGORIES = [
    ("matmul", r"^(Linear|MatMul|ActivationLinear|LinearCrossEntropy)\.",
     r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|addmv|mv)$"),
    ("attention", r"^FlashAttention\.", r"scaled_dot_product|flash_attention|efficient_attention"),
    ("softmax", r"^Softmax\.", r"^aten::(_?softmax|_softmax_backward_data)$"),
    ("cross-entropy", r"^(CrossEntropy|LogSoftmax)\.",
     r"^aten::(cross_entropy_loss|_?log_softmax|_log_softmax_backward_data|nll_loss\w*)$"),
    ("norm (layer/RMS)", r"^(LayerNorm|RMSNorm)\.", r"layer_norm|rms_norm"),
    ("activation (GELU/ReLU)", r"^(Gelu|GeluTanh|Relu)\.", r"^aten::(gelu|gelu_backward|relu|threshold_backward)$"),
    ("embedding", r"^Embedding\.", r"^aten::(embedding\w*|index_select|index_add_?|index)$"),
    ("elementwise", r"^(Add|Sub|Mul|Div|Neg|Pow|Exp|Log|Sqrt|Tanh|Sigmoid|Abs|Maximum|Where|MaskedFill)\.",
     r"^aten::(add|sub|mul|div|neg|pow|exp|log|sqrt|rsqrt|tanh|sigmoid|abs|maximum|where|masked_fill|"
     r"fill|zero|ones_like|zeros_like|rsub|lt|gt|eq|ne|ge|le|bitwise_\w+|logical_\w+)_?$"),
    ("reduction", r"^(Sum|Mean|Max|Var)\.", r"^aten::(sum|mean|max|amax|var)$"),
    ("reshape/copy", r"^(Reshape|Permute|Expand|GetItem|Concatenate|Stack|Cast|ToDevice)\.",
     r"^aten::(view|reshape|_reshape_alias|transpose|permute|t|contiguous|clone|copy_|expand|slice|select|"
     r"split\w*|cat|as_strided|_unsafe_view|unsqueeze|squeeze|detach|empty\w*|to|_to_copy|"
     r"alias|unbind|chunk|narrow|unflatten|flatten|new_\w+|resize_|empty_strided|stack)$"),
    ("autograd engine", None, r"^autograd::|Backward\d*$"),
]


def category(name: str, ours: bool) -> str:
    for label, ours_pattern, torch_pattern in CATEGORIES:
        pattern = ours_pattern if ours else torch_pattern
        if pattern and re.search(pattern, name):
            return label
    return "other"


# =======================================================================================
# Ours: a timer around every Function's forward and backward
# =======================================================================================

class OpTimer:
    """While active, accumulates seconds per ``Class.forward`` / ``Class.backward``: an
    observer of the autograd engine (``mt.autograd.observe``), which calls it around every
    op's forward and backward."""

    def __init__(self, sync):
        self.sync = sync
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self._observing = None

    def __call__(self, fn, phase, ctx, arrays, run):
        key = f"{fn.__name__}.{phase}"
        start = time.perf_counter()
        out = run()
        self.sync()
        self.seconds[key] += time.perf_counter() - start
        self.calls[key] += 1
        return out

    def __enter__(self):
        self._observing = mt.autograd.observe(self)
        self._observing.__enter__()
        return self

    def __exit__(self, *exc):
        observing, self._observing = self._observing, None
        return observing.__exit__(*exc)


# =======================================================================================
# The profile
# =======================================================================================

def _phases(pair, steps: int, sync) -> dict:
    """Median seconds of forward, backward and optimizer, ours and PyTorch, interleaved."""
    samples = {side: defaultdict(list) for side in ("ours", "pytorch")}
    sides = {
        "ours": (pair.ours_loss, pair.optimizer.step, pair.optimizer.zero_grad),
        "pytorch": (pair.theirs_loss, pair.torch_optimizer.step,
                    lambda: pair.torch_optimizer.zero_grad(set_to_none=True)),
    }
    for i in range(steps + 1):                               # the first round is a warm-up
        for side, (loss_fn, step, zero) in sides.items():
            t0 = time.perf_counter()
            loss = loss_fn()
            sync()
            t1 = time.perf_counter()
            loss.backward()
            sync()
            t2 = time.perf_counter()
            step()
            zero()
            sync()
            t3 = time.perf_counter()
            if i:
                for phase, s in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2),
                                 ("step", t3 - t0)):
                    samples[side][phase].append(s)
    return {side: {phase: median(v) for phase, v in d.items()} for side, d in samples.items()}


def _medians(per_step: list[dict]) -> dict:
    """Per key, the median over steps (a step without the key counts 0): one disturbed step
    of a busy machine must not decide the breakdown."""
    keys = set().union(*per_step)
    return {k: median([d.get(k, 0.0) for d in per_step]) for k in keys}


def _ours_ops(pair, steps: int, sync) -> tuple[dict, float, float]:
    """Median seconds per op kind per step, the median forward + backward wall time, and
    the median time between the ops (engine and Python)."""
    per_step, walls, between = [], [], []
    with OpTimer(sync) as timer:
        for _ in range(steps + 1):                      # the first step is a warm-up
            timer.seconds.clear()
            t0 = time.perf_counter()
            loss = pair.ours_loss()
            loss.backward()
            sync()
            wall = time.perf_counter() - t0
            pair.optimizer.step()
            pair.optimizer.zero_grad()
            per_step.append(dict(timer.seconds))
            walls.append(wall)
            between.append(max(wall - sum(timer.seconds.values()), 0.0))
    return _medians(per_step[1:]), median(walls[1:]), median(between[1:])


def _torch_ops(pair, steps: int, torch) -> tuple[dict, float]:
    """Median self time per aten op (and autograd node) per step, from torch.profiler, and
    the median forward + backward wall time under the profiler.

    Each step is its own profiler session and the first is thrown away: the first session
    of a process pays the profiler's start-up inside its events.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    cuda = pair.device != "cpu"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    per_step, walls = [], []
    for _ in range(steps + 1):
        with profile(activities=activities) as prof:
            t0 = time.perf_counter()
            loss = pair.theirs_loss()
            loss.backward()
            if cuda:
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - t0)
            # Part of a real step, but measured in the phases: its ops are left out below.
            pair.torch_optimizer.step()
            pair.torch_optimizer.zero_grad(set_to_none=True)
        seconds = defaultdict(float)
        for event in prof.events():
            if event.device_type.name != "CPU" or _inside_optimizer(event):
                continue
            self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
            seconds[event.name] += self_us * 1e-6
        per_step.append({k: v for k, v in seconds.items() if v > 0})
    return _medians(per_step[1:]), median(walls[1:])


def _inside_optimizer(event) -> bool:
    while event is not None:
        if event.name.startswith("Optimizer."):
            return True
        event = event.cpu_parent
    return False


def parse_spec(spec: str) -> tuple[str, str, str]:
    """("gpt", "mini", "pytorch") from "gpt-mini", ("bert", "real", "pytorch-fast") from
    "bert-real:pytorch-fast", or a ValueError naming what is expected."""
    head, _, contender = spec.partition(":")
    family, _, shape = head.partition("-")
    contender = contender or "pytorch"
    if shape not in SHAPES or family not in SHAPES[shape][0] or contender not in PROFILE_CONTENDERS:
        raise ValueError(f"--profile {spec!r}: expected FAMILY-SHAPE[:CONTENDER] with FAMILY one of gpt, bert, "
                         f"t5, SHAPE one of {', '.join(SHAPES)} and CONTENDER one of "
                         f"{', '.join(PROFILE_CONTENDERS)} (e.g. gpt-mini, bert-real:pytorch-fast)")
    return family, shape, contender


def profile_step(spec: str = "gpt-mini", device: str = "cpu", steps: int = 3, torch=None) -> dict:
    """Phases and per-op breakdown of one training step of ``spec`` ("family-shape[:contender]")."""
    family, shape, contender = parse_spec(spec)
    configs, batch_size, seq_len = SHAPES[shape]
    cfg = configs[family]
    pair = build_pair(family, cfg, make_batch(family, cfg, batch_size, seq_len), device, torch)
    if contender == "pytorch-fast":
        pair = build_fast_pair(pair)
    sync = sync_for(device, torch)
    phases = _phases(pair, steps, sync)
    ours_ops, ours_wall, ours_engine = _ours_ops(pair, steps, sync)
    torch_ops, torch_wall = _torch_ops(pair, steps, torch)
    cats = defaultdict(lambda: {"ours": 0.0, "pytorch": 0.0})
    for name, s in ours_ops.items():
        cats[category(name, True)]["ours"] += s
    cats["autograd engine"]["ours"] += ours_engine
    for name, s in torch_ops.items():
        cats[category(name, False)]["pytorch"] += s
    return {"spec": spec, "device": device, "steps": steps, "contender": pair.name, "phases": phases,
            "forward_backward_wall": {"ours": ours_wall, "pytorch": torch_wall},
            "categories": dict(cats), "ours_ops": ours_ops, "torch_ops": torch_ops,
            "ours_engine_seconds": ours_engine}


def table(result: dict, top: int = 12) -> str:
    p = result["phases"]
    lines = [f"profile of one {result['spec']} training step on {result['device']} "
             f"(medians of {result['steps']} interleaved steps; PyTorch: {result['contender']})", "",
             "| phase | ours ms | PyTorch ms | ours / PyTorch time |", "|---|---:|---:|---:|"]
    for phase in ("forward", "backward", "optimizer", "step"):
        a, b = p["ours"][phase], p["pytorch"][phase]
        lines.append(f"| {phase} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f} |")
    wall = result["forward_backward_wall"]
    lines += ["", f"forward + backward by category (instrumented, medians per step; wall ours "
                  f"{wall['ours'] * 1e3:.1f} ms, PyTorch {wall['pytorch'] * 1e3:.1f} ms)", "",
              "| category | ours ms | PyTorch ms | ours - PyTorch ms |", "|---|---:|---:|---:|"]
    cats = sorted(result["categories"].items(), key=lambda kv: -(kv[1]["ours"] - kv[1]["pytorch"]))
    for name, c in cats:
        lines.append(f"| {name} | {c['ours'] * 1e3:.1f} | {c['pytorch'] * 1e3:.1f} | "
                     f"{(c['ours'] - c['pytorch']) * 1e3:+.1f} |")
    for side, ops in (("ours", result["ours_ops"]), ("PyTorch", result["torch_ops"])):
        lines += ["", f"top {top} ops, {side} (ms per step)", "", "| op | ms | category |", "|---|---:|---|"]
        for name, s in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"| {name} | {s * 1e3:.2f} | {category(name, side == 'ours')} |")
    lines.append("")
    lines.append(f"ours: engine + Python between ops {result['ours_engine_seconds'] * 1e3:.1f} ms per step "
                 "(forward + backward wall minus the ops' time)")
    return "\n".join(lines)
