"""Training-step cost on the CPU, where GEMMs dominate: an MLP 784-512-512-10 SGD step at batch
128 (ReLU, softmax cross-entropy), and a pre-LN transformer block forward+backward (batch 8,
seq 128, d 256, 4 heads, MLP 1024, GELU) taking gradients of every parameter.

Contenders: gpugraph jit (NumPy backend; the MLP also with its parameters donated, and with
the BLAS thread policy off, i.e. GPUGRAPH_BLAS_THREADS=keep), jax.jit (the MLP also with
donate_argnums), torch eager, torch.compile (CPU inductor; skipped with a note if it fails),
and for the MLP a hand-written NumPy forward+backward (eager, and with preallocated out=
buffers). Each library runs at its default thread settings. Interleaved rounds with a 0.1 s pause
between contenders (spinning thread pools go idle), medians.

    python bench/bench_train.py [--quick]
writes bench/results/train-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
from common import gg, interleaved, table, try_torch_compile, write

LR = 0.01
B, D_IN, H, D_OUT = 128, 784, 512, 10
TB, TS, TD, HEADS, TF = 8, 128, 256, 4, 1024


# ---- the models, written once over a small op namespace per library ----------------------
class GG:
    relu, log_softmax, softmax, tanh = gg.relu, gg.log_softmax, gg.softmax, gg.tanh
    sum, mean, rsqrt, reshape, transpose = gg.sum, gg.mean, gg.rsqrt, gg.reshape, gg.transpose


def _jax_ns():
    import jax
    import jax.numpy as jnp

    class J:
        relu, log_softmax, softmax = jax.nn.relu, jax.nn.log_softmax, jax.nn.softmax
        tanh, sum, mean, reshape, transpose = (
            jnp.tanh,
            jnp.sum,
            jnp.mean,
            jnp.reshape,
            jnp.transpose,
        )
        rsqrt = jax.lax.rsqrt

    return J


def _torch_ns():
    import torch

    class T:
        relu, tanh, rsqrt = torch.relu, torch.tanh, torch.rsqrt
        reshape, transpose = torch.reshape, torch.permute

        @staticmethod
        def log_softmax(x, axis=-1):
            return torch.log_softmax(x, dim=axis)

        @staticmethod
        def softmax(x, axis=-1):
            return torch.softmax(x, dim=axis)

        @staticmethod
        def sum(x, axis=None, keepdims=False):
            return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

        @staticmethod
        def mean(x, axis=None, keepdims=False):
            return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    return T


def mlp_loss(p, x, y, ns):
    h = ns.relu(x @ p["w1"] + p["b1"])
    h = ns.relu(h @ p["w2"] + p["b2"])
    logits = h @ p["w3"] + p["b3"]
    return -ns.mean(ns.sum(y * ns.log_softmax(logits, axis=-1), axis=-1))


def _ln(x, g, b, ns):
    mu = ns.mean(x, axis=-1, keepdims=True)
    c = x - mu
    return c * ns.rsqrt(ns.mean(c * c, axis=-1, keepdims=True) + 1e-5) * g + b


def _gelu(x, ns):
    return 0.5 * x * (1.0 + ns.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))


def block_loss(p, x, ns):
    b, s, d = x.shape
    dh = d // HEADS
    h = _ln(x, p["g1"], p["c1"], ns)

    def heads(t):  # (b, s, d) -> (b, heads, s, dh)
        return ns.transpose(ns.reshape(t, (b, s, HEADS, dh)), (0, 2, 1, 3))

    q, k, v = heads(h @ p["wq"]), heads(h @ p["wk"]), heads(h @ p["wv"])
    att = ns.softmax((q @ ns.transpose(k, (0, 1, 3, 2))) * (1.0 / math.sqrt(dh)), axis=-1)
    o = ns.reshape(ns.transpose(att @ v, (0, 2, 1, 3)), (b, s, d))
    x = x + o @ p["wo"]
    h = _ln(x, p["g2"], p["c2"], ns)
    x = x + _gelu(h @ p["w1"], ns) @ p["w2"]
    return ns.mean(x * x)


# ---- data -----------------------------------------------------------------------------------
def mlp_data():
    rng = np.random.default_rng(0)
    f = np.float32
    p = {
        "w1": (rng.standard_normal((D_IN, H)) / math.sqrt(D_IN)).astype(f),
        "b1": np.zeros(H, f),
        "w2": (rng.standard_normal((H, H)) / math.sqrt(H)).astype(f),
        "b2": np.zeros(H, f),
        "w3": (rng.standard_normal((H, D_OUT)) / math.sqrt(H)).astype(f),
        "b3": np.zeros(D_OUT, f),
    }
    x = rng.standard_normal((B, D_IN)).astype(f)
    y = np.eye(D_OUT, dtype=f)[rng.integers(0, D_OUT, B)]
    return p, x, y


def block_data():
    rng = np.random.default_rng(1)
    f = np.float32

    def w(a, b):
        return (rng.standard_normal((a, b)) / math.sqrt(a)).astype(f)

    p = {"wq": w(TD, TD), "wk": w(TD, TD), "wv": w(TD, TD), "wo": w(TD, TD)}
    p.update(w1=w(TD, TF), w2=w(TF, TD))
    p.update(g1=np.ones(TD, f), c1=np.zeros(TD, f), g2=np.ones(TD, f), c2=np.zeros(TD, f))
    return p, rng.standard_normal((TB, TS, TD)).astype(f)


# ---- NumPy by hand (MLP) --------------------------------------------------------------------
def numpy_mlp_step(p, x, y):
    z1 = x @ p["w1"] + p["b1"]
    h1 = np.maximum(z1, 0)
    z2 = h1 @ p["w2"] + p["b2"]
    h2 = np.maximum(z2, 0)
    logits = h2 @ p["w3"] + p["b3"]
    m = logits.max(-1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(-1, keepdims=True)
    loss = -np.mean(np.sum(y * (logits - m - np.log(s)), -1))
    d3 = (e / s - y) / len(x)
    d2 = (d3 @ p["w3"].T) * (z2 > 0)
    d1 = (d2 @ p["w2"].T) * (z1 > 0)
    g = {"w3": h2.T @ d3, "b3": d3.sum(0), "w2": h1.T @ d2, "b2": d2.sum(0)}
    g.update(w1=x.T @ d1, b1=d1.sum(0))
    return {k: p[k] - LR * g[k] for k in p}, loss


class NumpyMlpOut:
    """The same step with every array preallocated once and written through out=; the
    parameters are updated in place (the caller keeps them)."""

    def __init__(self, p):
        e = np.empty
        f = np.float32
        self.z1, self.z2 = e((B, H), f), e((B, H), f)
        self.lg, self.m, self.s = e((B, D_OUT), f), e((B, 1), f), e((B, 1), f)
        self.d2, self.d1, self.d3 = e((B, H), f), e((B, H), f), e((B, D_OUT), f)
        self.g = {k: np.empty_like(v) for k, v in p.items()}

    def __call__(self, p, x, y):
        z1, z2, lg, m, s, d1, d2, d3, g = (
            self.z1, self.z2, self.lg, self.m, self.s, self.d1, self.d2, self.d3, self.g
        )  # fmt: skip
        np.matmul(x, p["w1"], out=z1)
        z1 += p["b1"]
        h1 = np.maximum(z1, 0, out=d1)  # d1 doubles as h1 until the backward needs it
        np.matmul(h1, p["w2"], out=z2)
        z2 += p["b2"]
        h2 = np.maximum(z2, 0, out=d2)
        np.matmul(h2, p["w3"], out=lg)
        lg += p["b3"]
        np.max(lg, -1, keepdims=True, out=m)
        lg -= m
        np.exp(lg, out=d3)
        np.sum(d3, -1, keepdims=True, out=s)
        loss = -np.mean(np.sum(y * (lg - np.log(s)), -1))
        d3 /= s
        d3 -= y
        d3 /= len(x)
        np.matmul(h2.T, d3, out=g["w3"])
        np.sum(d3, 0, out=g["b3"])
        np.matmul(h1.T, np.multiply(np.matmul(d3, p["w3"].T, out=d2), z2 > 0, out=d2), out=g["w2"])
        np.sum(d2, 0, out=g["b2"])
        np.multiply(np.matmul(d2, p["w2"].T, out=d1), z1 > 0, out=d1)
        np.matmul(x.T, d1, out=g["w1"])
        np.sum(d1, 0, out=g["b1"])
        for k in p:
            p[k] -= LR * g[k]
        return p, loss


# ---- contenders -------------------------------------------------------------------------------
def gg_step(p, x, y):
    loss, g = gg.value_and_grad(lambda q: mlp_loss(q, x, y, GG))(p)
    return {k: p[k] - LR * g[k] for k in p}, loss


def mlp_contenders(notes: list[str], with_keep: bool) -> dict:
    import jax
    import torch

    J, T = _jax_ns(), _torch_ns()
    p, x, y = mlp_data()
    ref_p, ref_loss = numpy_mlp_step(p, x, y)
    step = gg.jit(gg_step, backend="numpy")
    got_p, got_loss = step(p, x, y)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-4)
    for k in p:
        np.testing.assert_allclose(got_p[k], ref_p[k], rtol=1e-3, atol=1e-5, err_msg=k)
    runs = {"gpugraph jit": lambda: step(p, x, y)}

    donating = gg.jit(gg_step, backend="numpy", donate_argnums=0)
    state = {"p": {k: v.copy() for k, v in p.items()}}

    def donated():  # params = step(params, ...): the previous step's results are donated
        state["p"], _ = donating(state["p"], x, y)

    runs["gpugraph jit (donate params)"] = donated
    if with_keep:
        os.environ["GPUGRAPH_BLAS_THREADS"] = "keep"
        try:
            keep = gg.jit(gg_step, backend="numpy")
            keep(p, x, y)  # the policy is read when the call's program is made
        finally:
            del os.environ["GPUGRAPH_BLAS_THREADS"]
        runs["gpugraph jit (BLAS policy off)"] = lambda: keep(p, x, y)

    def jax_step(q, a, b):
        loss, g = jax.value_and_grad(lambda r: mlp_loss(r, a, b, J))(q)
        return {k: q[k] - LR * g[k] for k in q}, loss

    jstep = jax.jit(jax_step)
    jp = {k: jax.numpy.asarray(v) for k, v in p.items()}
    jx, jy = jax.numpy.asarray(x), jax.numpy.asarray(y)
    jax.block_until_ready(jstep(jp, jx, jy))
    runs["jax.jit"] = lambda: jax.block_until_ready(jstep(jp, jx, jy))
    jdon = jax.jit(jax_step, donate_argnums=0)
    jstate = {"p": {k: jax.numpy.array(v) for k, v in p.items()}}

    def jax_donated():
        jstate["p"], loss = jdon(jstate["p"], jx, jy)
        jax.block_until_ready(loss)

    runs["jax.jit (donate params)"] = jax_donated

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step(loss_fn):
        loss = loss_fn(tp, tx, ty)
        loss.backward()
        with torch.no_grad():
            for v in tp.values():
                v -= LR * v.grad
                v.grad = None
        return loss

    def torch_loss(q, a, b):
        return mlp_loss(q, a, b, T)

    runs["torch eager"] = lambda: torch_step(torch_loss)
    tc = try_torch_compile(torch_loss, (tp, tx, ty), "the MLP", notes)
    if tc is not None:
        tc(tp, tx, ty).backward()  # compile the backward too, before timing
        runs["torch.compile"] = lambda: torch_step(tc)
    runs["numpy eager (by hand)"] = lambda: numpy_mlp_step(p, x, y)
    np_out, np_p = NumpyMlpOut(p), {k: v.copy() for k, v in p.items()}
    runs["numpy out= (by hand)"] = lambda: np_out(np_p, x, y)
    return runs


def block_contenders(notes: list[str]) -> dict:
    import jax
    import torch

    J, T = _jax_ns(), _torch_ns()
    p, x = block_data()
    gfn = gg.jit(gg.value_and_grad(lambda q, a: block_loss(q, a, GG)), backend="numpy")
    jfn = jax.jit(jax.value_and_grad(lambda q, a: block_loss(q, a, J)))
    jp = {k: jax.numpy.asarray(v) for k, v in p.items()}
    jx = jax.numpy.asarray(x)
    gl, gg_grads = gfn(p, x)
    jl, j_grads = jfn(jp, jx)
    np.testing.assert_allclose(gl, jl, rtol=1e-4)
    for k in p:
        np.testing.assert_allclose(gg_grads[k], j_grads[k], rtol=2e-3, atol=1e-5, err_msg=k)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tx = torch.from_numpy(x)

    def torch_fb(loss_fn):
        loss = loss_fn(tp, tx)
        loss.backward()
        for v in tp.values():
            v.grad = None
        return loss

    def torch_loss(q, a):
        return block_loss(q, a, T)

    runs = {
        "gpugraph jit": lambda: gfn(p, x),
        "jax.jit": lambda: jax.block_until_ready(jfn(jp, jx)),
        "torch eager": lambda: torch_fb(torch_loss),
    }
    tc = try_torch_compile(torch_loss, (tp, tx), "the transformer block", notes)
    if tc is not None:
        tc(tp, tx).backward()
        runs["torch.compile"] = lambda: torch_fb(tc)
    return runs


def run(quick: bool = False) -> tuple[list[dict], list[str]]:
    notes: list[str] = []
    rows = []

    def pair():  # the same step with only the two closest contenders: no other thread pools
        runs = mlp_contenders(notes, with_keep=False)
        return {k: runs[k] for k in ("gpugraph jit", "jax.jit")}

    work = [
        ("MLP step (batch 128)", lambda: mlp_contenders(notes, with_keep=True), 7 if quick else 21),
        ("MLP step, gpugraph and jax only", pair, 7 if quick else 31),
        ("transformer block fwd+bwd", lambda: block_contenders(notes), 3 if quick else 9),
    ]
    for label, make, rounds in work:
        med = interleaved(make(), rounds, inner=1, warmup=1, pause=0.1)
        base, jax_t = med["gpugraph jit"], med["jax.jit"]
        for name, t in med.items():
            rows.append(
                {
                    "workload": label,
                    "impl": name,
                    "ms": t * 1e3,
                    "vs_gpugraph": t / base,
                    "over_jax_jit": t / jax_t,
                }
            )
    return rows, notes


COLUMNS = ["workload", "impl", "ms", "vs_gpugraph", "over_jax_jit"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    rows, notes = run(args.quick)
    print(table(rows, COLUMNS))
    for n in notes:
        print("note:", n)
    note = (
        "float32; interleaved rounds, medians per step. vs_gpugraph = this row / gpugraph jit "
        "(> 1: gpugraph is faster); over_jax_jit = this row / jax.jit (< 1: faster than jax). "
        + " ".join(notes)
    )
    path = write("train", rows, {"note": note, "quick": args.quick}, COLUMNS)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
