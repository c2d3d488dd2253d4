"""The computation graph of a small expression, with every value and gradient.

The expression is micrograd's first example, L = (a*b + c) * f, built with the library's
Tensor; the graph is read from the nodes the ops leave on their outputs (``Tensor._node``)
before ``backward()`` frees it, and each box shows the value and the gradient that
``backward()`` put there.
"""
from __future__ import annotations

from matplotlib.figure import Figure

import minitransformer as mt


def build():
    """The expression, its graph (nodes and edges, read before backward) and the gradients."""
    leaf = {name: mt.tensor(v, requires_grad=True, dtype="float64")
            for name, v in (("a", 2.0), ("b", -3.0), ("c", 10.0), ("f", -2.0))}
    e = leaf["a"] * leaf["b"]
    d = e + leaf["c"]
    loss = d * leaf["f"]
    named = {**leaf, "e": e, "d": d, "L": loss}
    for t in (e, d):
        t.retain_grad()
    # A node names its inputs by their nodes (or, for a leaf, the Tensor itself).
    name_of = {id(t if t._node is None else t._node): n for n, t in named.items()}
    ops, edges = [], []                    # op boxes (name, op), edges (from, to)
    for n, t in named.items():
        if t._node is not None:
            op = t._node.fn.__name__
            ops.append((n, op))
            edges += [(name_of[id(i)], f"{op}:{n}") for i in t._node.inputs if i is not None]
            edges.append((f"{op}:{n}", n))
    loss.backward()
    values = {n: float(t.item()) for n, t in named.items()}
    grads = {n: (1.0 if n == "L" else float(t.grad)) for n, t in named.items()}
    return values, grads, ops, edges


def make(out_dir):
    values, grads, ops, edges = build()
    pos = {"a": (0, 3), "b": (0, 2), "c": (0, 1), "f": (0, 0), "e": (2, 2.5), "d": (4, 1.75), "L": (6, 1)}
    for n, op in ops:
        x, y = pos[n]
        pos[f"{op}:{n}"] = (x - 1, y)
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    for src, dst in edges:
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        ax.annotate("", (x1 - 0.35, y1), (x0 + 0.35, y0), arrowprops=dict(arrowstyle="->", color="0.5"))
    for key, (x, y) in pos.items():
        if ":" in key:
            ax.text(x, y, key.split(":")[0], ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="circle", fc="#fde9c9", ec="#c58a2b"))
        else:
            ax.text(x, y, f"{key}\ndata {values[key]:g}\ngrad {grads[key]:g}", ha="center", va="center",
                    fontsize=8, bbox=dict(boxstyle="round", fc="#dbe8f6", ec="#4c72b0"))
    ax.set_xlim(-0.6, 6.6)
    ax.set_ylim(-0.6, 3.6)
    ax.axis("off")
    ax.set_title("L = (a*b + c) * f: values forward, gradients dL/dx from backward()", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "graph.png", dpi=110)
    return {"values": values, "grads": grads, "ops": [op for _, op in ops]}
