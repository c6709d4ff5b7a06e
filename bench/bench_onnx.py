"""ONNX import benchmark: the onnx wheel's `light` model-zoo nets (random weights, batch 1,
224x224, float32) through gg.onnx.load, against onnxruntime (CPU execution provider) on the
same model and input. Each net is first checked (max relative error against ORT); then the
per-call median, interleaved, and the first call (trace + compile + run).

    python bench/bench_onnx.py [--nets squeezenet,resnet50] [--rounds R] [--threads T]
writes bench/results/onnx-cpu-<date>.{md,json}; ratio = ORT ms / gpugraph ms (below 1:
gpugraph is slower).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from common import interleaved, table, write  # noqa: E402

import gpugraph as gg  # noqa: E402
from gpugraph.onnx.light import LIGHT_NETS, light_path, randomized  # noqa: E402


def bench_net(name: str, rounds: int, threads: int) -> dict:
    data = randomized(onnx.load(light_path(name))).SerializeToString()
    t0 = time.perf_counter()
    m = gg.onnx.load(data)
    load_s = time.perf_counter() - t0
    spec = m.inputs[0]
    x = np.random.default_rng(1).standard_normal(spec.shape).astype(np.float32)
    t0 = time.perf_counter()
    (got,) = m(x)
    first_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {spec.name: x})
    err = float(np.max(np.abs(gg.asnumpy(got) - ref)) / np.max(np.abs(ref)))
    med = interleaved(
        {"gpugraph": lambda: m(x), "onnxruntime": lambda: sess.run(None, {spec.name: x})},
        rounds,
        pause=0.05,
    )
    return {
        "net": name,
        "params_M": round(sum(p.size for p in m.params.values()) / 1e6, 1),
        "max_rel_err_vs_ort": err,
        "load_s": round(load_s, 2),
        "first_call_s": round(first_s, 2),
        "gpugraph_ms": med["gpugraph"] * 1e3,
        "ort_ms": med["onnxruntime"] * 1e3,
        "ratio_ort_over_gpugraph": round(med["onnxruntime"] / med["gpugraph"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(LIGHT_NETS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    warnings.simplefilter("ignore", gg.CapturedArrayWarning)
    ort.set_default_logger_severity(3)
    rows = []
    with threadpool_limits(args.threads, user_api="blas"):
        for name in args.nets.split(","):
            rows.append(bench_net(name, args.rounds, args.threads))
            print(table(rows[-1:], list(rows[-1])), flush=True)
    columns = list(rows[0])
    note = (
        f"The onnx wheel's `light` nets with random weights (gpugraph.onnx.light.randomized), "
        f"batch 1, float32, CPU; {args.threads} thread(s) for ORT and for gpugraph's BLAS; "
        f"median of {args.rounds} interleaved rounds. ratio = ORT ms / gpugraph ms (below 1: "
        "gpugraph is slower). Where gpugraph loses: its convolutions are im2col + one GEMM "
        "with the im2col buffer allocated per call; ORT runs MLAS direct/NCHWc kernels and "
        "fuses Conv+Relu and BatchNormalization into the conv weights."
    )
    md = write(
        "onnx",
        rows,
        {
            "note": note,
            "threads": args.threads,
            "rounds": args.rounds,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        columns,
    )
    print(table(rows, columns))
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
