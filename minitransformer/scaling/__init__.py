"""What a model costs, and how its loss falls with size: accounting and scaling laws.

Reading order, one concept per module:

- ``parameters``: parameter counts by formula, embedding and non-embedding (Kaplan's N);
- ``flops``: the matrix-product FLOPs of a training step, C = 6 N D + attention, the one
  account ``minitransformer info``, the sweep and the benchmarks share;
- ``memory``: weights, gradients, Adam's moments, activations and the backward workspace;
- ``summary``: all of it for one model, as ``minitransformer info`` prints it;
- ``counter``: the FLOPs a step actually executes, measured through the autograd engine's
  observer hook (the tests hold it equal to ``flops`` for every family);
- ``fit``: L(N) = E + A / N^alpha (Chinchilla's form) and Kaplan's (N_c / N)^alpha, with
  confidence intervals;
- ``sweep``: a ladder of model sizes trained on the same data and token budget;
- ``report``: the fits, a table and plots of a sweep.

The per-family formulas (``gpt_parameters``, ``bert_step_flops``, ``t5_activations``, ...)
are named in each family's record of ``minitransformer.families``.
"""
from minitransformer.scaling.parameters import count_parameters
from minitransformer.scaling.flops import (
    CHINCHILLA_TOKENS_PER_PARAMETER, chinchilla_optimal, chinchilla_tokens, logit_rows, matmul_parameters,
    step_flops, training_flops, training_flops_per_token,
)
from minitransformer.scaling.memory import (
    Kernels, activation_memory, backward_workspace, training_memory,
)
from minitransformer.scaling.summary import account, summary
from minitransformer.scaling.counter import FlopCount, count_matmul_flops
from minitransformer.scaling.fit import (
    CHINCHILLA, KAPLAN_ALPHA_C, KAPLAN_ALPHA_N, PowerLawFit, fit_power_law, fit_pure_power_law,
)
from minitransformer.scaling.sweep import (
    FULL_SIZES, QUICK_SIZES, ModelSize, default_lr, parse_size, run_sweep, sweep_config,
)
from minitransformer.scaling.report import analyse, format_fits, format_table, write_report

__all__ = [
    "count_parameters", "CHINCHILLA_TOKENS_PER_PARAMETER", "chinchilla_optimal", "chinchilla_tokens",
    "logit_rows", "matmul_parameters", "step_flops", "training_flops", "training_flops_per_token",
    "Kernels", "activation_memory", "backward_workspace", "training_memory", "account", "summary",
    "FlopCount", "count_matmul_flops", "CHINCHILLA", "KAPLAN_ALPHA_C", "KAPLAN_ALPHA_N", "PowerLawFit",
    "fit_power_law", "fit_pure_power_law", "FULL_SIZES", "QUICK_SIZES", "ModelSize", "default_lr",
    "parse_size", "run_sweep", "sweep_config", "analyse", "format_fits", "format_table", "write_report",
]
