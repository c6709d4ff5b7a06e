"""``python -m gpugraph run|explain model.onnx``: run an ONNX model on given or random inputs
and print its outputs and a median timing, or print the compiled plan (graph summary, fusion
groups, streams, memory plan) and optionally write it as DOT."""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from ..errors import GpuGraphError


def _parse_pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise GpuGraphError(f"{what} takes NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def make_inputs(model: Any, files: dict[str, str], dims: dict[str, str], seed: int = 0) -> list:
    """Each graph input from its .npy file, or random (normal floats, zero ints/bools) in the
    declared shape; a symbolic dim takes ``dims[name]`` (default 1)."""
    unknown = set(files) - set(model.input_names)
    if unknown:
        raise GpuGraphError(
            f"--input names {sorted(unknown)} are not inputs of the model {list(model.input_names)}"
        )
    rng = np.random.default_rng(seed)
    xs = []
    for spec in model.inputs:
        if spec.name in files:
            x = np.load(files[spec.name], allow_pickle=False)
            xs.append([x] if spec.sequence else x)  # a sequence input: one item
            continue
        if spec.shape is None:
            raise GpuGraphError(f"input {spec.name!r} has no declared shape: pass --input")
        shape = tuple(d if isinstance(d, int) else int(dims.get(str(d), 1)) for d in spec.shape)
        if np.issubdtype(spec.dtype, np.floating):
            x = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == object:  # strings
            x = np.full(shape, "a", dtype=object)
        else:
            x = np.zeros(shape, spec.dtype)
        xs.append([x] if spec.sequence else x)
    return xs


def _describe(x) -> str:
    if isinstance(x, list):  # a sequence
        return f"sequence of {len(x)}: " + ", ".join(_describe(v) for v in x)
    return f"shape {tuple(x.shape)} {x.dtype}"


def _sync(outs: tuple) -> None:
    for o in outs:  # CuPy: wait for the device; NumPy arrays have no stream
        if hasattr(o, "__cuda_array_interface__"):
            import cupy

            cupy.cuda.get_current_stream().synchronize()
            return


def run(path: str, inputs: list[str], dims: list[str], repeats: int, out=sys.stdout) -> int:
    from . import load

    m = load(path)
    xs = make_inputs(m, _parse_pairs(inputs, "--input"), _parse_pairs(dims, "--dim"))
    t0 = time.perf_counter()
    outs = m(*xs)
    _sync(outs)
    first = (time.perf_counter() - t0) * 1e3
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _sync(m(*xs))
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"model: {path} (opset {m.opset}, {len(m._nodes)} nodes)", file=out)
    for spec, x in zip(m.inputs, xs):
        print(f"input  {spec.name}: {_describe(x)}", file=out)
    for name, o in zip(m.output_names, outs):
        print(f"output {name}: {_describe(o)}", file=out)
    print(
        f"median per call over {repeats} runs: {statistics.median(times):.3f} ms "
        f"(first call, compile included: {first:.1f} ms)",
        file=out,
    )
    return 0


def explain(path: str, inputs: list[str], dims: list[str], dot: str | None, out=sys.stdout) -> int:
    from . import load

    m = load(path)
    xs = make_inputs(m, _parse_pairs(inputs, "--input"), _parse_pairs(dims, "--dim"))
    compiled = m.lower(*xs)
    ops = Counter(n.op for n in compiled.graph.nodes)
    print(f"model: {path} (opset {m.opset}, {len(m._nodes)} ONNX nodes)", file=out)
    print("optimized graph ops: " + ", ".join(f"{k} x{v}" for k, v in ops.most_common()), file=out)
    print(compiled.explain(), file=out)
    if dot:
        with open(dot, "w") as f:
            f.write(compiled.to_dot())
        print(f"wrote {dot}", file=out)
    return 0
