"""Newton's method with ``gg.while_loop``, and its gradient through the solver.

Solve ``f(x; a) = x**3 + a * x - 1 = 0`` elementwise for a batch of parameters ``a`` (the real
root is unique for ``a > 0``): iterate ``x <- x - f(x) / f'(x)`` until every residual is below a
tolerance. The loop runs inside one compiled graph. Its gradient with respect to ``a`` is
taken by reverse mode *through the iterations* (``max_steps`` bounds the tape; JAX refuses
reverse mode through ``while_loop``), and checked against the implicit-function theorem,
``dx/da = -(df/da) / (df/dx) = -x / (3x^2 + a)``. Run ``python examples/newton.py``.
"""

from __future__ import annotations

import sys

import numpy as np

try:
    import gpugraph as gg
except ImportError:  # run from a source checkout without installing: use the repo root
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import gpugraph as gg

TOL, MAX_STEPS = 1e-10, 50


def solve(a):
    """The root x(a) of x^3 + a x - 1 for each a, and the number of Newton steps taken."""

    def residual(x):
        return x * x * x + a * x - 1.0

    def not_done(state):
        x, k = state
        return gg.max(gg.abs(residual(x))) > TOL

    def step(state):
        x, k = state
        return x - residual(x) / (3.0 * x * x + a), k + 1

    x, k = gg.while_loop(not_done, step, (gg.ones_like(a), 0), max_steps=MAX_STEPS)
    return x, k


@gg.jit
def roots(a):
    return solve(a)


@gg.jit
def root_grad(a):
    """d(sum of roots)/da, by reverse mode through every Newton step."""
    return gg.grad(lambda a: solve(a)[0].sum())(a)


def main() -> None:
    a = np.linspace(0.5, 4.0, 8)  # float64
    x, steps = roots(a)
    print("a:        ", np.round(a, 3))
    print("root x(a):", np.round(x, 6), f"after {int(steps)} Newton steps")
    print("max |f(x)|:", float(np.abs(x**3 + a * x - 1).max()))
    g = root_grad(a)
    implicit = -x / (3 * x * x + a)
    print("dx/da through the loop:   ", np.round(g, 6))
    print("dx/da, implicit function: ", np.round(implicit, 6))
    print("max difference:", float(np.abs(g - implicit).max()))
    report = roots.lower(a).explain()
    print("explain():", report[report.index("region while") :], sep="\n")


if __name__ == "__main__":
    main()
