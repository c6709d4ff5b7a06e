"""ONNX import benchmark: the onnx wheel's `light` model-zoo nets (random weights, 224x224,
float32) and torch's TransformerEncoderLayer (dynamo export) through gg.onnx.load, against
onnxruntime (CPU execution provider) on the same model and input. Each case is first checked
(max relative error against ORT); then the per-call median, interleaved, the first call
(trace + compile + run), gpugraph's arena, and with --memory each runtime's peak RSS growth
over one run in a fresh process (ORT's Python API reports no peak of its own).

    python bench/bench_onnx.py [--nets squeezenet,resnet50] [--batches 1,16] [--transformer]
                               [--memory] [--rounds R] [--threads T] [--suffix -2]
writes bench/results/onnx-cpu-<date><suffix>.{md,json}; ratio = ORT ms / gpugraph ms (below
1: gpugraph is slower).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from common import RESULTS, interleaved, table, write  # noqa: E402

import gpugraph as gg  # noqa: E402
from gpugraph.onnx.light import LIGHT_NETS, light_path, randomized, rebatched  # noqa: E402

TRANSFORMER = {"d_model": 256, "nhead": 8, "dim_feedforward": 1024, "seq": 128}


def model_bytes(name: str, batch: int) -> tuple[bytes, tuple[int, ...]]:
    """The ONNX model of a case and its input shape."""
    if name != "transformer":
        model = randomized(onnx.load(light_path(name)))
        return rebatched(model, batch).SerializeToString() if batch != 1 else (
            model.SerializeToString()
        ), (batch, 3, 224, 224)
    import torch

    t = TRANSFORMER
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        t["d_model"], t["nhead"], t["dim_feedforward"], dropout=0.0, batch_first=True
    ).eval()
    shape = (batch, t["seq"], t["d_model"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            layer, (torch.randn(*shape),), dynamo=True, opset_version=18, verbose=False
        )
    return prog.model_proto.SerializeToString(), shape


def bench_case(name: str, batch: int, rounds: int, threads: int) -> dict:
    data, shape = model_bytes(name, batch)
    t0 = time.perf_counter()
    m = gg.onnx.load(data)
    load_s = time.perf_counter() - t0
    spec = m.inputs[0]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    t0 = time.perf_counter()
    (got,) = m(x)
    first_s = time.perf_counter() - t0
    plan = m.lower(x).memory
    sess = _ort_session(data, threads)
    (ref,) = sess.run(None, {spec.name: x})
    err = float(np.max(np.abs(gg.asnumpy(got) - ref)) / np.max(np.abs(ref)))
    med = interleaved(
        {"gpugraph": lambda: m(x), "onnxruntime": lambda: sess.run(None, {spec.name: x})},
        rounds,
        pause=0.05,
    )
    return {
        "net": name,
        "batch": batch,
        "params_M": round(sum(p.size for p in m.params.values()) / 1e6, 1),
        "max_rel_err_vs_ort": err,
        "load_s": round(load_s, 2),
        "first_call_s": round(first_s, 2),
        "gpugraph_ms": med["gpugraph"] * 1e3,
        "ort_ms": med["onnxruntime"] * 1e3,
        "ratio_ort_over_gpugraph": round(med["onnxruntime"] / med["gpugraph"], 3),
        "arena_MB": round(plan.arena_bytes / 2**20, 1),
        "naive_MB": round(plan.naive_bytes / 2**20, 1),
    }


def _ort_session(data: bytes, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _peak_rss_child(runtime: str, name: str, batch: int, threads: int) -> None:
    """In a fresh process: model loaded and input made, then the peak RSS growth (MB) over
    the first run (for gpugraph: trace + compile + arena + run) and over a second run."""
    data, shape = model_bytes(name, batch)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    if runtime == "gpugraph":
        m = gg.onnx.load(data)
        del data

        def run():
            return m(x)
    else:
        sess = _ort_session(data, threads)
        feed = {sess.get_inputs()[0].name: x}
        del data

        def run():
            return sess.run(None, feed)

    def status(key: str) -> float:  # MB, from /proc/self/status
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (peak RSS) to the current RSS: setup's peak not counted
    base = status("VmRSS")
    run()
    print(json.dumps({"first_run_MB": round(status("VmHWM") - base, 1)}))


def peak_rss(runtime: str, name: str, batch: int, threads: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--_rss", runtime, name, str(batch), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["first_run_MB"]


def main() -> None:
    if sys.argv[1:2] == ["--_rss"]:
        warnings.simplefilter("ignore")
        ort.set_default_logger_severity(3)
        runtime, name, batch, threads = sys.argv[2:6]
        from threadpoolctl import threadpool_limits

        with threadpool_limits(int(threads), user_api="blas"):
            _peak_rss_child(runtime, name, int(batch), int(threads))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(LIGHT_NETS))
    parser.add_argument("--batches", default="1")
    parser.add_argument("--transformer", action="store_true", help="add TransformerEncoderLayer")
    parser.add_argument("--memory", action="store_true", help="peak RSS per runtime (slow)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--suffix", default="", help="appended to the result file names")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    warnings.simplefilter("ignore", gg.CapturedArrayWarning)
    ort.set_default_logger_severity(3)
    names = [n for n in args.nets.split(",") if n] + (["transformer"] if args.transformer else [])
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for name in names:
            with threadpool_limits(args.threads, user_api="blas"):
                row = bench_case(name, batch, args.rounds, args.threads)
            if args.memory:
                for rt in ("gpugraph", "onnxruntime"):
                    row[f"{rt}_peak_rss_MB"] = peak_rss(rt, name, batch, args.threads)
            rows.append(row)
            print(table(rows[-1:], list(rows[-1])), flush=True)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    t = TRANSFORMER
    note = (
        f"The onnx wheel's `light` nets with random weights (gpugraph.onnx.light.randomized; "
        f"batch > 1 by gpugraph.onnx.light.rebatched) and, as `transformer`, torch's "
        f"TransformerEncoderLayer(d_model={t['d_model']}, nhead={t['nhead']}, "
        f"dim_feedforward={t['dim_feedforward']}, batch_first) on {t['seq']} tokens, exported "
        f"with dynamo=True; float32, CPU; {args.threads} thread(s) for ORT and for gpugraph's "
        f"BLAS; median of {args.rounds} interleaved rounds. ratio = ORT ms / gpugraph ms "
        "(below 1: gpugraph is slower). arena_MB: gpugraph's planned arena for the "
        "activations (naive_MB: one buffer per value); *_peak_rss_MB: growth of the "
        "process's peak RSS over the first run in a fresh process (model already loaded; for "
        "gpugraph this includes tracing and compiling and the arena, conv scratch included)."
    )
    # common.write names the files onnx-cpu-<date>; with a suffix, keep what is there now.
    stem = RESULTS / f"onnx-cpu-{datetime.date.today().isoformat()}"
    kept = {
        ext: stem.with_suffix(ext).read_bytes()
        for ext in (".md", ".json")
        if args.suffix and stem.with_suffix(ext).exists()
    }
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
    if args.suffix:
        for ext in (".md", ".json"):
            src = md.with_suffix(ext)
            src.rename(src.with_name(src.stem + args.suffix + ext))
            if ext in kept:
                src.write_bytes(kept[ext])
        md = md.with_name(md.stem + args.suffix + ".md")
    print(table(rows, columns))
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
