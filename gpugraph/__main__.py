"""python -m gpugraph demo | info | bench | cache info|clear | run|explain model.onnx"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import gpugraph as gg


def _model(params, x):
    h = gg.gelu(x @ params["w1"] + params["b1"])
    h = gg.layer_norm(h)
    return gg.softmax(h @ params["w2"] + params["b2"])


def demo(batch: int, hidden: int, repeats: int) -> None:
    info = gg.default_backend()
    print(f"backend: {info}")
    print(f"device: {gg.device_info().gpu_summary()}")
    rng = np.random.default_rng(0)
    params = {
        "w1": (rng.standard_normal((64, hidden)) / 8).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.standard_normal((hidden, 10)) / np.sqrt(hidden)).astype(np.float32),
        "b2": np.zeros(10, np.float32),
    }
    x = rng.standard_normal((batch, 64)).astype(np.float32)
    if info.name == "cupy":
        import cupy

        params = {k: cupy.asarray(v) for k, v in params.items()}
        x = cupy.asarray(x)
    model = gg.jit(_model)
    compiled = model.lower(params, x)
    print("\ncompiled graph:")
    print(compiled.graph)
    print("\n" + compiled.explain())
    sync = _synchronizer(info.name)
    jit_ms = _median_ms(lambda: sync(model(params, x)), repeats)
    eager_ms = _median_ms(lambda: sync(_model(params, x)), repeats)
    out = model(params, x)
    rows = gg.asnumpy(out.sum(axis=1))
    ok = bool(np.allclose(rows, 1, atol=1e-5))
    print(f"\noutput {out.shape} {out.dtype}; rows sum to 1: {ok}")
    print(
        f"median per call over {repeats} runs: jit {jit_ms:.3f} ms, eager {eager_ms:.3f} ms "
        f"(eager/jit = {eager_ms / jit_ms:.2f}x)"
    )


def _synchronizer(backend: str):
    if backend != "cupy":
        return lambda out: out
    import cupy

    return lambda out: cupy.cuda.get_current_stream().synchronize()


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: compiles on the first call
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _positive_int(text: str) -> int:
    """argparse type for sizes and counts: an int >= 1 (a median over 0 runs is undefined)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gpugraph")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="compile a small model, run it, print the graph and a timing")
    d.add_argument("--batch", type=_positive_int, default=256)
    d.add_argument("--hidden", type=_positive_int, default=128)
    d.add_argument("--repeats", type=_positive_int, default=20)
    sub.add_parser("info", help="print the backend auto picks and why, the GPU, the cpu backend")
    c = sub.add_parser("cache", help="the persistent kernel cache ($GPUGRAPH_CACHE_DIR)")
    c.add_argument("action", choices=["info", "clear"])
    sub.add_parser(
        "bench",
        help="run the CPU benchmark suite (bench/) and print one table; --quick, --only",
        add_help=False,  # bench --help is the suite runner's
    )
    _onnx_parsers(sub)
    args, rest = p.parse_known_args(argv)
    if args.cmd == "bench":
        raise SystemExit(_bench(rest))
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.cmd in ("run", "explain"):
        raise SystemExit(_onnx(args))
    if args.cmd == "demo":
        demo(args.batch, args.hidden, args.repeats)
    elif args.cmd == "cache":
        from gpugraph import cache

        print(cache.info() if args.action == "info" else f"removed {cache.clear()} entries")
    else:
        from gpugraph.backends import cpu_backend

        device = gg.device_info()
        print(f"backend: {device.backend}\ndevice: {device.gpu_summary()}")
        print(f"cpu backend: {cpu_backend.status()}")


def _onnx_parsers(sub) -> None:
    for name, text in (
        ("run", "run an ONNX model: its outputs' shapes and dtypes and a median timing"),
        ("explain", "compile an ONNX model: graph summary, fusion groups, streams, memory plan"),
    ):
        q = sub.add_parser(name, help=text)
        q.add_argument("model", help="path of the .onnx file")
        q.add_argument(
            "--input",
            action="append",
            default=[],
            metavar="NAME=FILE.npy",
            help="an input's value (others are random in their declared shape)",
        )
        q.add_argument(
            "--dim",
            action="append",
            default=[],
            metavar="SYMBOL=N",
            help="the size of a symbolic dim (default 1)",
        )
        if name == "run":
            q.add_argument("--repeats", type=_positive_int, default=10)
        else:
            q.add_argument("--dot", metavar="OUT.dot", help="write the compiled graph as DOT")


def _onnx(args) -> int:
    """The ONNX subcommands; a GpuGraphError (bad file, unsupported op) is one line, exit 1."""
    from gpugraph.errors import GpuGraphError

    try:
        from gpugraph.onnx import cli

        if args.cmd == "run":
            return cli.run(args.model, args.input, args.dim, args.repeats)
        return cli.explain(args.model, args.input, args.dim, args.dot)
    except (GpuGraphError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}")
        return 1


def _bench(argv: list[str]) -> int:
    """bench/run_all.py from the source checkout this package sits in (--quick, --only ...)."""
    import importlib.util
    from pathlib import Path

    runner = Path(__file__).resolve().parents[1] / "bench" / "run_all.py"
    if not runner.exists():
        print(f"the benchmarks live in the source checkout (bench/), not found at {runner}")
        return 2
    spec = importlib.util.spec_from_file_location("gpugraph_bench_run_all", runner)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


if __name__ == "__main__":
    main()
