"""Reverse-mode automatic differentiation on NumPy and CuPy arrays.

Reading order: ``hooks`` (the engine's hook for observers: FLOP counters, timers),
``tensor`` (the Tensor and backward), ``function`` (how an op joins the graph), ``ops``
(the primitive ops), ``gradcheck`` (checking any op's backward against finite differences).
"""
from minitransformer.autograd.hooks import matmul_flops, observe
from minitransformer.autograd.tensor import Tensor, tensor
from minitransformer.autograd.function import (
    Context, Function, enable_grad, is_grad_enabled, no_grad, unbroadcast,
)
from minitransformer.autograd.ops import (
    concatenate, exp, gelu, log, matmul, maximum, relu, sigmoid, split, sqrt, squeeze,
    stack, tanh, unsqueeze, where,
)
from minitransformer.autograd.gradcheck import GradcheckError, gradcheck

__all__ = [
    "Tensor", "tensor", "Function", "Context", "no_grad", "enable_grad", "is_grad_enabled",
    "unbroadcast", "gradcheck", "GradcheckError", "concatenate", "stack", "split", "where",
    "maximum", "matmul", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "squeeze",
    "unsqueeze", "observe", "matmul_flops",
]
