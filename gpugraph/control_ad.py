"""Differentiation rules of the region ops, written with the region ops themselves.

Each rule builds new regions whose bodies are the derivative of the old body: ``gg.jvp`` or
``gg.vjp`` of ``eval_graph(body)``, traced inside the new body. So the derivative of a loop is a
loop (optimized, fused and planned like any other), it works eagerly and under ``gg.jit``, and
it composes (grad of grad through ``scan`` differentiates the backward scan by the same rule).

* ``cond``: the same cond over the branches' jvp / vjp.
* ``scan``: jvp is a scan over (carry, tangent). vjp runs a residual scan that stacks the carry
  entering every step (length x carry: the tape), then a scan in the opposite direction over
  the stacked residuals, the xs and the ys' cotangents, carrying the carry's cotangent and the
  consts' accumulated cotangent.
* ``while``: jvp is a while over (carry, tangent). vjp needs ``max_steps``: the loop is
  re-expressed as a scan of ``max_steps`` steps whose body is ``cond(pred, body, identity)``,
  and that scan is differentiated (so the tape is bounded by max_steps). Without it, an error.

Only floating-point values get tangents or cotangents; integer carries (counters) ride along.
Rules recompute the forward body once more (the tape is rebuilt, not kept from the forward op).
"""

from __future__ import annotations

from typing import Any

from .autodiff import eval_graph, jvp, vjp
from .control_flow import _switch_index, cond, scan, while_loop
from .errors import GpuGraphError
from .ir import is_float
from .ops.core import type_of
from .ops.creation import zeros_like


def _float_idx(xs) -> list[int]:
    return [i for i, x in enumerate(xs) if is_float(type_of(x).dtype)]


def _replace(full: list, idx: list[int], vals) -> list:
    out = list(full)
    for i, v in zip(idx, vals):
        out[i] = v
    return out


def _tan(t: Any, x: Any) -> Any:
    return t if t is not None else zeros_like(x)


# -- cond ----------------------------------------------------------------------------------
def cond_jvp(tangents, outs, index, *ins, branches, _loc=None):
    ops = list(ins)
    fi, fo = _float_idx(ops), _float_idx(outs)
    if not fi or not fo:
        return [None] * len(outs)
    tans = [_tan(tangents[1 + i], ops[i]) for i in fi]

    def make(g):
        def branch(ops_, tans_):
            def f(*fv):
                return eval_graph(g, _replace(ops_, fi, fv))

            _, t = jvp(f, [ops_[i] for i in fi], list(tans_))
            return [t[k] for k in fo]

        return branch

    names = [f"branch {k} (jvp)" for k in range(len(branches))]
    t = _switch_index(index, [make(g) for g in branches], names, (ops, tans), "cond jvp", _loc)
    res: list[Any] = [None] * len(outs)
    for k, tk in zip(fo, t):
        res[k] = tk
    return res


def cond_vjp(cts, outs, index, *ins, branches, _loc=None):
    ops = list(ins)
    fi, fo = _float_idx(ops), _float_idx(outs)
    res: list[Any] = [None] * (1 + len(ops))
    if not fi or not fo:
        return res

    def make(g):
        def branch(ops_, cts_):
            def f(*fv):
                r = eval_graph(g, _replace(ops_, fi, fv))
                return [r[k] for k in fo]

            _, back = vjp(f, *[ops_[i] for i in fi])
            return list(back(list(cts_)))

        return branch

    names = [f"branch {k} (vjp)" for k in range(len(branches))]
    cts_f = [cts[k] for k in fo]
    g = _switch_index(index, [make(b) for b in branches], names, (ops, cts_f), "cond vjp", _loc)
    for i, c in zip(fi, g):
        res[1 + i] = c
    return res


# -- while ---------------------------------------------------------------------------------
def while_jvp(tangents, outs, *ins, cond_graph, body_graph, n_carry, max_steps=None, _loc=None):
    nc = n_carry
    carry, consts = list(ins[:nc]), list(ins[nc:])
    fc, fk = _float_idx(carry), _float_idx(consts)
    if not fc:
        return [None] * nc
    tc = [_tan(tangents[i], carry[i]) for i in fc]
    tk = [_tan(tangents[nc + i], consts[i]) for i in fk]
    wrt = fc + [nc + i for i in fk]

    def cond_fun(s):
        return eval_graph(cond_graph, list(s[0]) + consts)[0]

    def body_fun(s):
        c, t = s
        base = list(c) + consts

        def f(*fv):
            return eval_graph(body_graph, _replace(base, wrt, fv))

        o, tout = jvp(f, [base[p] for p in wrt], list(t) + tk)
        return list(o), [tout[i] for i in fc]

    _, t = while_loop(cond_fun, body_fun, (carry, tc), max_steps)
    res: list[Any] = [None] * nc
    for i, ti in zip(fc, t):
        res[i] = ti
    return res


def while_vjp(cts, outs, *ins, cond_graph, body_graph, n_carry, max_steps=None, _loc=None):
    if max_steps is None:
        from .autograph_ops import unbounded_loop_advice  # the loop may be a converted one

        raise GpuGraphError(
            f"reverse-mode differentiation of while_loop (at {_loc}) needs a bound on its trip "
            f"count: {unbounded_loop_advice(_loc)}"
        )
    nc = n_carry
    base = list(ins)
    fc, fk = _float_idx(base[:nc]), _float_idx(base[nc:])
    res: list[Any] = [None] * len(ins)
    if not fc:
        return res
    wrt = fc + [nc + i for i in fk]

    def bounded(*fv):
        full = _replace(base, wrt, fv)
        c0, k = full[:nc], full[nc:]

        def step(c, _):
            p = eval_graph(cond_graph, list(c) + k)[0]
            c2 = cond(p, lambda cc: eval_graph(body_graph, list(cc) + k), lambda cc: list(cc), c)
            return list(c2), None

        cf, _ = scan(step, list(c0), None, length=max_steps)
        return [cf[i] for i in fc]

    _, back = vjp(bounded, *[base[p] for p in wrt])
    for p, g in zip(wrt, back([cts[i] for i in fc])):
        res[p] = g
    return res


# -- scan ----------------------------------------------------------------------------------
def _scan_parts(ins, n_carry, n_xs):
    nc, nx = n_carry, n_xs
    return list(ins[:nc]), list(ins[nc : nc + nx]), list(ins[nc + nx :])


def scan_jvp(tangents, outs, *ins, body, n_carry, n_xs, length, reverse=False, _loc=None):
    nc, nx = n_carry, n_xs
    carry, xs, consts = _scan_parts(ins, nc, nx)
    fc, fx, fk = _float_idx(carry), _float_idx(xs), _float_idx(consts)
    fy = [k - nc for k in _float_idx(outs) if k >= nc]
    if not (fc or fx or fk):
        return [None] * len(outs)
    tc = [_tan(tangents[i], carry[i]) for i in fc]
    tx = [_tan(tangents[nc + i], xs[i]) for i in fx]
    tk = [_tan(tangents[nc + nx + i], consts[i]) for i in fk]
    wrt = fc + [nc + i for i in fx] + [nc + nx + i for i in fk]

    def step(s, x):
        (c, t_c), (xv, t_x) = s, x
        base = list(c) + list(xv) + consts

        def f(*fv):
            return eval_graph(body, _replace(base, wrt, fv))

        o, t = jvp(f, [base[p] for p in wrt], list(t_c) + list(t_x) + tk)
        return (list(o[:nc]), [t[i] for i in fc]), [t[nc + j] for j in fy]

    (_, t_c), t_y = scan(step, (carry, tc), (xs, tx), length=length, reverse=reverse)
    res: list[Any] = [None] * len(outs)
    for i, ti in zip(fc, t_c):
        res[i] = ti
    for j, tj in zip(fy, t_y):
        res[nc + j] = tj
    return res


def scan_vjp(cts, outs, *ins, body, n_carry, n_xs, length, reverse=False, _loc=None):
    nc, nx = n_carry, n_xs
    carry, xs, consts = _scan_parts(ins, nc, nx)
    fc, fx, fk = _float_idx(carry), _float_idx(xs), _float_idx(consts)
    fy = [k - nc for k in _float_idx(outs) if k >= nc]
    res: list[Any] = [None] * len(ins)
    if not (fc or fx or fk) or not (fc or fy):
        return res

    def residual(c, x):  # the tape: the carry entering every step
        r = eval_graph(body, list(c) + list(x) + consts)
        return list(r[:nc]), list(c)

    _, cstack = scan(residual, carry, xs, length=length, reverse=reverse)
    wrt = fc + [nc + i for i in fx] + [nc + nx + i for i in fk]
    a, b = len(fc), len(fc) + len(fx)

    def backward(s, x):
        (g_c, g_k), (c_t, x_t, cy_t) = s, x
        base = list(c_t) + list(x_t) + consts

        def f(*fv):
            r = eval_graph(body, _replace(base, wrt, fv))
            return [r[i] for i in fc] + [r[nc + j] for j in fy]

        _, back = vjp(f, *[base[p] for p in wrt])
        g = back(list(g_c) + list(cy_t))
        return (list(g[:a]), [gk + gi for gk, gi in zip(g_k, g[b:])]), list(g[a:b])

    ct_c = [cts[i] for i in fc]
    ct_y = [cts[nc + j] for j in fy]
    ct_k = [zeros_like(consts[i]) for i in fk]
    (g_c, g_k), g_x = scan(
        backward, (ct_c, ct_k), (cstack, xs, ct_y), length=length, reverse=not reverse
    )
    for i, v in zip(fc, g_c):
        res[i] = v
    for i, v in zip(fx, g_x):
        res[nc + i] = v
    for i, v in zip(fk, g_k):
        res[nc + nx + i] = v
    return res
