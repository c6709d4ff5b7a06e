"""``python -m gpugraph run|explain model.onnx`` as subprocesses on a tiny model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX import needs the onnx package")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(path) -> None:
    """y = relu(x @ w + 1) * 2 (a fusable tail), z = argmax(y); batch dim symbolic."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "w")
    one = numpy_helper.from_array(np.ones(4, np.float32), "one")
    two = numpy_helper.from_array(np.full(4, 2, np.float32), "two")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "one"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("Mul", ["h2", "two"], ["y"]),
        helper.make_node("ArgMax", ["y"], ["z"], axis=1, keepdims=0),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("z", TensorProto.INT64, ["N"]),
        ],
        [w, one, two],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "gpugraph", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_run_prints_outputs_and_timing(tmp_path):
    _tiny(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((5, 3), np.float32))
    r = _cli("run", "m.onnx", "--input", "x=x.npy", "--repeats", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "input  x: shape (5, 3) float32" in r.stdout
    assert "output y: shape (5, 4) float32" in r.stdout
    assert "output z: shape (5,) int64" in r.stdout
    assert "median per call over 2 runs:" in r.stdout


def test_random_inputs_dims_and_errors_in_process(tmp_path, capsys):
    """The same entry point called in-process (no interpreter start): random inputs with a
    symbolic dim set by --dim; a bad --input name is one error line and exit status 1."""
    from gpugraph.__main__ import main

    _tiny(tmp_path / "m.onnx")
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "m.onnx"), "--dim", "N=7", "--repeats", "1"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "output y: shape (7, 4) float32" in out, out
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "m.onnx"), "--input", f"q={tmp_path / 'x.npy'}"])
    out = capsys.readouterr().out
    assert e.value.code == 1 and out.startswith("error: GpuGraphError") and "'q'" in out, out
    with pytest.raises(SystemExit) as e:
        main(["explain", str(tmp_path / "missing.onnx")])
    assert e.value.code == 1 and "No such file" in capsys.readouterr().out


def test_explain_prints_the_plan_and_writes_dot(tmp_path):
    _tiny(tmp_path / "m.onnx")
    r = _cli("explain", "m.onnx", "--dot", "g.dot", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for part in ("optimized graph ops:", "matmul", "fusion: group 0", "schedule:", "memory: arena"):
        assert part in r.stdout, (part, r.stdout)
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph") and "matmul" in dot


def test_run_a_model_with_string_input_and_sequence_output(tmp_path):
    """String inputs get "a"s, sequence inputs one item; outputs print as shapes or as a
    sequence of shapes."""
    seq_t = helper.make_tensor_sequence_value_info
    nodes = [
        helper.make_node("StringNormalizer", ["s"], ["u"], case_change_action="UPPER"),
        helper.make_node("SequenceInsert", ["q", "x"], ["q2"]),
    ]
    g = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("s", TensorProto.STRING, [3]),
            seq_t("q", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("u", TensorProto.STRING, [None]),
            seq_t("q2", TensorProto.FLOAT, [2]),
        ],
    )
    path = tmp_path / "mixed.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    r = _cli("run", str(path), "--repeats", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "output u: shape (3,) object" in r.stdout
    assert "output q2: sequence of 2: shape (2,) float32, shape (2,) float32" in r.stdout
