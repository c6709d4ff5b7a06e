"""ONNX import (gg.onnx.load): the ONNX conformance data shipped in the onnx wheel, a
model-zoo net against onnxruntime, fine-tuning gradients, and the load-time errors."""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import pytest

import gpugraph as gg

onnx = pytest.importorskip(
    "onnx", reason="ONNX import needs the onnx package (pip install gpugraph[onnx])"
)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import gpugraph.onnx as gox  # noqa: E402
from gpugraph.onnx.light import LIGHT_NETS, light_path, randomized  # noqa: E402

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
FOLDERS = ("simple", "pytorch-operator", "pytorch-converted")
# Cases whose ops all have a mapping but use a feature a converter refuses while tracing (an
# UnsupportedError at the first call, never a number). Each says why.
TRACE_UNSUPPORTED: dict[str, str] = {}
# Why each op type that conformance cases use has no mapping: the skip list (printed by
# test_conformance_counts_match_the_docs, listed case by case in docs/onnx.md). A case with
# an unmapped op not listed here fails, so every skip has a reason.
SKIP_REASONS: dict[str, str] = {}


def skip_line(case: str, unmapped: set[str]) -> str:
    """The docs/onnx.md skip-list row of a case refused at load."""
    reasons = sorted({SKIP_REASONS[op] for op in unmapped})
    ops = ", ".join(f"`{op}`" for op in sorted(unmapped))
    return f"| {case.replace(os.sep, '/')} | {ops} | {'; '.join(reasons)} |"


def _cases() -> list[str]:
    out = []
    for folder in FOLDERS:
        root = os.path.join(DATA, folder)
        out += [
            os.path.join(folder, c)
            for c in sorted(os.listdir(root))
            if os.path.isdir(os.path.join(root, c))
        ]
    return out


def _unmapped(model) -> set[str]:
    return {n.op_type for n in model.graph.node if not gox.is_mapped(n)}


def _tensors(pattern: str) -> list[np.ndarray]:
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(pattern))]


@pytest.mark.parametrize("case", _cases())
def test_conformance(case):
    path = os.path.join(DATA, case, "model.onnx")
    unmapped = _unmapped(onnx.load(path))
    if unmapped:  # refused at load time, naming the op, before anything runs
        assert unmapped <= set(SKIP_REASONS), f"no skip reason for {unmapped - set(SKIP_REASONS)}"
        with pytest.raises(gg.UnsupportedError, match="|".join(sorted(unmapped))):
            gox.load(path)
        return
    m = gox.load(path)
    for ds in sorted(glob.glob(os.path.join(DATA, case, "test_data_set_*"))):
        inputs, expected = (
            _tensors(os.path.join(ds, "input_*.pb")),
            _tensors(os.path.join(ds, "output_*.pb")),
        )
        if os.path.basename(case) in TRACE_UNSUPPORTED:
            with pytest.raises(gg.UnsupportedError):
                m(*inputs)
            return
        got = m(*inputs)
        assert len(got) == len(expected) == len(m.output_names)
        for g, e in zip(got, expected):
            g = gg.asnumpy(g)
            assert g.shape == e.shape and g.dtype == e.dtype
            if e.dtype == object:  # strings (the host pre-stage): exact
                assert g.tolist() == e.tolist()
                continue
            np.testing.assert_allclose(
                g, e, rtol=1e-3, atol=1e-7
            )  # the onnx backend runner's tolerances


# The nets whose check takes 5-25 s here (dense layers of 60-140M weights to randomize,
# serialize and parse twice; densenet121's 900 nodes to compile): marked slow, so
# `-m "not slow"` keeps the five quick ones (6-15 s together, by the load).
_HEAVY_LIGHT = {"bvlc_alexnet", "densenet121", "vgg19", "zfnet512"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in _HEAVY_LIGHT else n for n in LIGHT_NETS],
)
def test_light_model_zoo_net_matches_onnxruntime(name):
    """Each of the onnx wheel's `light` nets, with varied weights and no final Softmax (so a
    wrong op cannot hide behind a saturated output), against onnxruntime on one input."""
    ort = pytest.importorskip(
        "onnxruntime", reason="the model-zoo check compares against onnxruntime"
    )
    model = randomized(onnx.load(light_path(name)))
    data = model.SerializeToString()
    m = gox.load(data)
    del model
    assert len(m.inputs) == 1 and m.inputs[0].shape == (1, 3, 224, 224)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (got,) = m(x)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the machine is shared
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {m.input_names[0]: x})
    assert np.std(ref) > 0  # the check means something: the logits differ
    np.testing.assert_allclose(gg.asnumpy(got), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name", [n for n in LIGHT_NETS if n not in _HEAVY_LIGHT])
def test_light_model_zoo_net_matches_its_shipped_output(name):
    """The unmodified net on the input the onnx backend runner generates for the `light`
    models (a ramp, arange(n) / n) against the output shipped beside it, at the runner's
    tolerances. A weak check (the outputs are a saturated Softmax of constant weights; the
    check above is the strong one), so only the five quick nets: the heavy four would add
    25-30 s of CI for it."""
    path = light_path(name)
    m = gox.load(path)
    shape = m.inputs[0].shape
    n = int(np.prod(shape))
    x = (np.arange(n).reshape(shape) / n).astype(np.float32)
    (got,) = m(x)
    (expected,) = _tensors(path[: -len(".onnx")] + "_output_0.pb")
    assert gg.asnumpy(got).shape == expected.shape
    np.testing.assert_allclose(gg.asnumpy(got), expected, rtol=1e-3, atol=1e-7)


def _mlp_model(dtype=TensorProto.DOUBLE, batch="N"):
    rng = np.random.default_rng(0)
    npdt = helper.tensor_dtype_to_np_dtype(dtype)
    w1 = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(npdt), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(4).astype(npdt), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 4)).astype(npdt), "w2")
    shape = numpy_helper.from_array(np.array([-1, 2], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias"),
        helper.make_node("Tanh", ["h1"], ["h2"], name="act"),
        helper.make_node("Gemm", ["h2", "w2"], ["h3"], name="fc", transB=1, alpha=0.5),
        helper.make_node("Shape", ["h3"], ["s"], name="shape_of"),
        helper.make_node("Reshape", ["h3", "shape"], ["y"], name="reshape"),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", dtype, [batch, 3])],
        [
            helper.make_tensor_value_info("y", dtype, [batch, 2]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
        [w1, b1, w2, shape],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _mlp_numpy(p, x):
    return 0.5 * np.tanh(x @ p["w1"] + p["b1"]) @ p["w2"].T


def test_model_object_and_symbolic_batch():
    m = gox.load(_mlp_model())
    assert m.input_names == ("x",) and m.output_names == ("y", "s")
    assert m.inputs[0].shape == ("N", 3) and set(m.params) == {"w1", "b1", "w2"}
    for n in (1, 5):  # one compiled entry per concrete batch
        x = np.random.default_rng(n).standard_normal((n, 3))
        y, s = m(x)
        np.testing.assert_allclose(gg.asnumpy(y), _mlp_numpy(m.params, x), rtol=1e-12)
        assert gg.asnumpy(s).tolist() == [n, 2]  # Shape folded at trace time
    with pytest.raises(gg.ShapeError, match="'x'"):
        m(np.zeros((2, 4)))
    with pytest.raises(gg.DTypeError, match="'x'"):
        m(np.zeros((2, 3), np.float32))


def test_grad_through_imported_model():
    m = gox.load(_mlp_model())
    x = np.random.default_rng(2).standard_normal((6, 3))

    def loss(params, x):
        return gg.sum(gg.square(m.fn(params, x)[0]))

    grads = gg.jit(gg.grad(loss))(m.params, x)
    assert set(grads) == set(m.params)
    eps = 1e-6
    for name, p in m.params.items():  # central differences in float64
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            hi, lo = (
                {k: v.copy() for k, v in m.params.items()},
                {k: v.copy() for k, v in m.params.items()},
            )
            hi[name][i] += eps
            lo[name][i] -= eps
            num[i] = (np.sum(_mlp_numpy(hi, x) ** 2) - np.sum(_mlp_numpy(lo, x) ** 2)) / (2 * eps)
        np.testing.assert_allclose(gg.asnumpy(grads[name]), num, rtol=1e-6, atol=1e-8)
    # a fine-tuning step lowers the loss
    new = {k: v - 0.01 * gg.asnumpy(grads[k]) for k, v in m.params.items()}
    assert float(loss(new, x)) < float(loss(m.params, x))


def test_fn_lowers_and_explains():
    m = gox.load(_mlp_model(TensorProto.FLOAT))
    compiled = gg.jit(m.fn).lower(m.params, np.zeros((4, 3), np.float32))
    assert "tanh" in compiled.explain()


def test_unsupported_op_named_at_load():
    g = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"], name="ok"),
            helper.make_node("NonZero", ["h"], ["y"], name="nz"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, None])],
    )
    with pytest.raises(gg.UnsupportedError, match=r"NonZero \(opset 17, node 'nz'\)"):
        gox.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_malformed_and_dangling_models_raise():
    with pytest.raises(gox.OnnxError):
        gox.load(b"\x08\x07\x12\xff\xff\xff\xff not a protobuf")
    good = _mlp_model().SerializeToString()
    with pytest.raises(gg.GpuGraphError):
        gox.load(good[: len(good) // 2])
    model = _mlp_model()
    model.graph.node[1].input[1] = "missing"
    with pytest.raises(gox.OnnxError, match="'missing'"):
        gox.load(model)


def test_external_data_outside_the_model_dir_is_refused(tmp_path):
    model = _mlp_model()
    t = model.graph.initializer[0]
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")
    t.ClearField("double_data")
    for loc in ("../secret.bin", "/etc/passwd"):
        del t.external_data[:]
        t.external_data.add(key="location", value=loc)
        with pytest.raises(gox.OnnxError, match="leaves"):
            gox.load(model, external_data_dir=str(tmp_path))


def test_external_data_inside_loads_and_symlinks_out_are_refused(tmp_path):
    model = _mlp_model()
    w1 = numpy_helper.to_array(model.graph.initializer[0])
    onnx.save_model(
        model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0
    )
    m = gox.load(str(tmp_path / "m.onnx"))
    np.testing.assert_array_equal(m.params["w1"], w1)
    outside = tmp_path.parent / f"{tmp_path.name}_outside.bin"
    os.replace(tmp_path / "w.bin", outside)
    os.symlink(outside, tmp_path / "w.bin")  # a link inside the folder that points out of it
    with pytest.raises(gox.OnnxError, match="leaves"):
        gox.load(str(tmp_path / "m.onnx"))
    outside.unlink()


def _i64(*v):
    return np.array(v, np.int64)


# Single-node models for ops and attribute forms the conformance data does not reach, checked
# against onnxruntime: (op, inputs, attributes, opset). Inputs named c* are initializers.
SINGLE = [
    ("CastLike", {"x": (2, 3), "cl": np.zeros(1, np.float64)}, {}, 15),
    ("Trilu", {"x": (4, 5), "ck": _i64(1)}, {"upper": 0}, 17),
    ("Trilu", {"x": (2, 4, 5)}, {}, 17),
    ("Flatten", {"x": (2, 3, 4, 5)}, {"axis": -1}, 13),
    ("Mod", {"x": _i64(7, -7, 7, -7, 0), "y": _i64(3, 3, -3, -3, 5)}, {}, 13),
    ("Mish", {"x": (3, 4)}, {}, 18),
    ("LRN", {"x": (1, 6, 3, 3)}, {"size": 3, "alpha": 0.01, "beta": 0.75, "bias": 2.0}, 13),
    ("LRN", {"x": (2, 5, 2, 3)}, {"size": 5}, 13),
    ("Celu", {"x": (3, 4)}, {"alpha": 0.7}, 13),
    ("ThresholdedRelu", {"x": (3, 4)}, {"alpha": 0.3}, 13),
    ("ReduceL1", {"x": (2, 3, 4)}, {"axes": [1]}, 13),
    ("ReduceL2", {"x": (2, 3, 4), "ca": _i64(0, 2)}, {"keepdims": 0}, 18),
    ("ReduceSumSquare", {"x": (2, 3, 4)}, {}, 13),
    ("ReduceLogSumExp", {"x": (2, 3, 4)}, {"axes": [2], "keepdims": 0}, 13),
    ("ReduceLogSumExp", {"x": (2, 3, 4)}, {}, 13),
    ("DepthToSpace", {"x": (1, 8, 2, 3)}, {"blocksize": 2}, 13),
    ("DepthToSpace", {"x": (1, 8, 2, 3)}, {"blocksize": 2, "mode": "CRD"}, 13),
    ("SpaceToDepth", {"x": (1, 2, 4, 6)}, {"blocksize": 2}, 13),
    (
        "MaxPool",
        {"x": (1, 2, 9, 8)},
        {"kernel_shape": [3, 2], "dilations": [2, 3], "strides": [2, 1]},
        13,
    ),
    (
        "MaxPool",
        {"x": (1, 2, 9, 8)},
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        13,
    ),
    (
        "MaxPool",
        {"x": (1, 2, 8, 7)},
        {
            "kernel_shape": [2, 3],
            "strides": [3, 2],
            "pads": [1, 0, 1, 1],
            "ceil_mode": 1,
            "dilations": [2, 1],
        },
        13,
    ),
    (
        "MaxPool",
        {"x": (1, 1, 10)},
        {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1},
        13,
    ),
    (
        "MaxPool",
        {"x": (1, 2, 11, 13)},
        {"kernel_shape": [3, 2], "strides": [4, 3], "dilations": [2, 3], "pads": [1, 1, 2, 0]},
        13,
    ),
    (
        "MaxPool",
        {"x": (1, 2, 12, 9)},
        {"kernel_shape": [2, 2], "strides": [2, 1], "dilations": [2, 1], "ceil_mode": 1},
        13,
    ),
    ("Range", {"cs": np.float32(1), "cl": np.float32(4), "cd": np.float32(0.5)}, {}, 13),
    ("CumSum", {"x": (3, 4), "ca": _i64(1)}, {"exclusive": 1, "reverse": 1}, 17),
    ("CumSum", {"x": (3, 4), "ca": _i64(0)}, {}, 17),
    ("HardSwish", {"x": (3, 4)}, {}, 17),
    ("Softsign", {"x": (3, 4)}, {}, 17),
    ("Gelu", {"x": (3, 4)}, {}, 20),
    ("Gelu", {"x": (3, 4)}, {"approximate": "tanh"}, 20),
    ("Erf", {"x": (3, 4)}, {}, 17),
    ("LayerNormalization", {"x": (2, 3, 4), "cw": (3, 4), "cb": (3, 4)}, {"axis": -2}, 17),
    ("Softmax", {"x": (2, 3, 4)}, {"axis": 1}, 13),
    ("Softmax", {"x": (2, 3, 4)}, {"axis": 1}, 11),
    ("LogSoftmax", {"x": (2, 3, 4)}, {}, 13),
    ("ReduceMax", {"x": (2, 3, 4), "ca": _i64(-1, 0)}, {"keepdims": 0}, 18),
    ("ReduceMean", {"x": (2, 3, 4)}, {"axes": [1]}, 13),
    ("ArgMax", {"x": (3, 5)}, {"axis": 1, "keepdims": 0}, 13),
    ("Gather", {"x": (5, 3), "ci": _i64(-1, 0, 2)}, {"axis": 0}, 13),
    ("Split", {"x": (7, 2)}, {"num_outputs": 3}, 18),
    ("Pad", {"x": (3, 4), "cp": _i64(1, 2, 1, 0)}, {"mode": "reflect"}, 18),
    ("Clip", {"x": (3, 4), "clo": np.float32(-0.5), "chi": np.float32(0.5)}, {}, 13),
    ("Expand", {"x": (3, 1), "cs": _i64(2, 1, 4)}, {}, 13),
    (
        "Slice",
        {"x": (6, 5), "cs": _i64(5, 1), "ce": _i64(-7, 100), "ca": _i64(0, 1), "cst": _i64(-2, 2)},
        {},
        13,
    ),
    ("Unsqueeze", {"x": (3, 4), "ca": _i64(-1, 0)}, {}, 13),
    ("Where", {"c": (3, 4), "x": (3, 4), "y": (1, 4)}, {}, 13),
    (
        "Gemm",
        {"x": (4, 3), "cw": (5, 4), "cc": (5,)},
        {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0},
        13,
    ),
]


_IDX = np.array([[1, -1, 0], [2, 0, -3]], np.int64)  # negative indices count from the end
_F = np.float32
# Selection, scatter, one-hot, einsum and resize (ops_select.py), negative axes included.
SINGLE += [
    ("TopK", {"x": (3, 5), "ck": _i64(2)}, {"num_outputs": 2}, 13),
    ("TopK", {"x": (4, 3, 2), "ck": _i64(3)}, {"axis": -3, "num_outputs": 2}, 11),
    ("TopK", {"x": (3, 5), "ck": _i64(2)}, {"largest": 0, "axis": 0, "num_outputs": 2}, 11),
    ("TopK", {"x": _F([[3, 1, 3, 2, 1]])}, {"k": 3, "num_outputs": 2}, 9),
    ("GatherElements", {"x": (3, 4), "ci": _IDX}, {}, 13),
    ("GatherElements", {"x": (3, 4), "ci": _IDX}, {"axis": -1}, 13),
    ("ScatterElements", {"x": (3, 4), "ci": _IDX, "u": (2, 3)}, {"axis": -1}, 13),
    ("ScatterElements", {"x": (3, 4), "ci": _IDX, "u": (2, 3)}, {"reduction": "add"}, 16),
    ("ScatterElements", {"x": (3, 4), "ci": _IDX, "u": (2, 3)}, {"reduction": "mul"}, 16),
    ("ScatterElements", {"x": (3, 4), "ci": _IDX, "u": (2, 3)}, {"reduction": "min"}, 18),
    ("ScatterElements", {"x": (3, 4), "ci": _IDX, "u": (2, 3)}, {"reduction": "max"}, 18),
    ("OneHot", {"i": _IDX, "cd": _i64(4), "cv": _F([-1, 2])}, {}, 11),
    ("OneHot", {"i": _IDX, "cd": _i64(3), "cv": _i64(0, 5)}, {"axis": -2}, 11),
    ("OneHot", {"i": _i64(0, 7, -9), "cd": _i64(4), "cv": _F([0, 1])}, {"axis": 0}, 11),
    ("Einsum", {"a": (2, 3, 4), "b": (2, 4, 5)}, {"equation": "bij, bjk -> bik"}, 12),
    ("Einsum", {"a": (3, 3)}, {"equation": "ii"}, 12),
    ("Einsum", {"a": (3, 4), "b": (4,)}, {"equation": "ij,j"}, 12),
    # onnxruntime takes `...` only when the output keeps it and every input's `...` spans as
    # many dims (gg.einsum also takes NumPy's wider forms)
    ("Einsum", {"a": (2, 3)}, {"equation": "...j->..."}, 12),
    ("Einsum", {"a": (2, 3, 4), "b": (2, 4, 5)}, {"equation": "...ij,...jk->...ik"}, 12),
    ("Einsum", {"a": (2, 3, 4), "b": (2, 4, 3)}, {"equation": "...ij,...ji"}, 12),
    (
        "Resize",
        {"x": (1, 2, 3, 4), "cr": _F([]), "cs": _F([1, 1, 2, 3])},
        {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        },
        13,
    ),
    (
        "Resize",
        {"x": (1, 2, 6, 5), "cr": _F([]), "cs": _F([]), "cz": _i64(1, 2, 3, 15)},
        {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        },
        13,
    ),
    ("Resize", {"x": (1, 2, 3, 4), "cr": _F([]), "cs": _F([1, 1, 2, 1.5])}, {"mode": "linear"}, 13),
    (
        "Resize",
        {"x": (2, 1, 5, 4, 3), "cr": _F([]), "cs": _F([]), "cz": _i64(2, 1, 3, 7, 3)},
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        13,
    ),
    ("Resize", {"x": (1, 2, 6), "cr": _F([]), "cs": _F([1, 1, 0.5])}, {"mode": "linear"}, 11),
    ("Upsample", {"x": (1, 2, 3, 4), "cs": _F([1, 1, 2, 3])}, {}, 9),
    ("Upsample", {"x": (1, 2, 4, 3)}, {"scales": [1.0, 1.0, 1.5, 2.0]}, 7),
]


def _single_model(op, spec, attrs, opset):
    rng = np.random.default_rng(0)
    inputs, inits, feeds = [], [], {}
    for name, v in spec.items():
        if isinstance(v, tuple):
            arr = rng.standard_normal(v).astype(np.float32)
            if name == "c":
                arr = arr > 0
        else:
            arr = np.asarray(v)
        if name.startswith("c") and name != "c":
            inits.append(numpy_helper.from_array(arr, name))
        else:
            feeds[name] = arr
            dt = helper.np_dtype_to_tensor_dtype(arr.dtype)
            inputs.append(helper.make_tensor_value_info(name, dt, list(arr.shape)))
    n_out = attrs.get("num_outputs", 1)
    outs = [f"y{i}" for i in range(n_out)]
    if op != "Split":  # num_outputs is Split's attribute; elsewhere it only counts outputs
        attrs = {k: v for k, v in attrs.items() if k != "num_outputs"}
    node = helper.make_node(op, list(spec), outs, name="n", **attrs)
    g = helper.make_graph(
        [node], "g", inputs, [helper.make_empty_tensor_value_info(o) for o in outs], inits
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model, feeds


@pytest.mark.parametrize("case", SINGLE, ids=[f"{c[0]}-{i}" for i, c in enumerate(SINGLE)])
def test_single_ops_match_onnxruntime(case):
    ort = pytest.importorskip("onnxruntime", reason="single-op checks compare against onnxruntime")
    model, feeds = _single_model(*case)
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = gox.load(data)(*(feeds[n] for n in gox.load(data).input_names))
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        g = gg.asnumpy(g)
        assert g.shape == r.shape and g.dtype == r.dtype
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_docs_op_table_is_generated_from_the_mapping():
    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "onnx.md")).read()
    assert gox.op_table_markdown() in page


def test_declared_size_over_the_limit_is_refused(monkeypatch):
    monkeypatch.setitem(gox.LIMITS, "max_tensor_bytes", 64)
    with pytest.raises(gg.GpuGraphError, match="initializer 'w1'.*max_tensor_bytes"):
        gox.load(_mlp_model())  # w1 is 3x4 float64: 96 bytes
    g = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["y"], name="big")],
        "g",
        [],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(_i64(1 << 20, 1 << 20), "s")],
    )
    m = gox.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(gg.GpuGraphError, match="'big'.*max_tensor_bytes"):
        m.fn(m.params)


def test_fuzzed_protobufs_raise_gpugraph_errors_only():
    """Truncated and bit-flipped models: loading either fails with a GpuGraphError or gives
    a model (a flipped weight bit is still a valid model); never another exception."""
    data = bytearray(_mlp_model().SerializeToString())
    rng = np.random.default_rng(0)
    x = np.ones((2, 3))
    for trial in range(150):
        bad = bytearray(data)
        if trial % 3 == 0:
            bad = bad[: rng.integers(0, len(bad))]
        else:
            for _ in range(rng.integers(1, 4)):
                bad[rng.integers(0, len(bad))] ^= 1 << int(rng.integers(0, 8))
        try:
            m = gox.load(bytes(bad))
            m(x)
        except gg.GpuGraphError:
            pass


def _torch_modules(torch):
    class ResBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = (
                torch.nn.Conv2d(8, 8, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(8),
            )
            self.c2, self.b2 = (
                torch.nn.Conv2d(8, 8, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(8),
            )

        def forward(self, x):
            return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))

    class Attention(torch.nn.Module):  # a pre-norm transformer block, written out
        def __init__(self, d=16, heads=4):
            super().__init__()
            self.heads, self.ln = heads, torch.nn.LayerNorm(d)
            self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.ff = torch.nn.Sequential(
                torch.nn.Linear(d, 32), torch.nn.GELU(), torch.nn.Linear(32, d)
            )

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln(x)).split(d, dim=-1)
            q, k, v = (
                z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v)
            )
            a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1) @ v
            x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
            return x + self.ff(x)

    class Resample(torch.nn.Module):  # Resize (both modes), TopK, GatherElements
        def forward(self, x):
            f = torch.nn.functional
            y = f.interpolate(x, scale_factor=2, mode="nearest")
            y = f.interpolate(y, size=(5, 9), mode="bilinear", align_corners=False)
            v, i = torch.topk(y, 3, dim=-1)
            return v + torch.gather(y, -1, (i + 1) % 9)

    return {
        "resample": (Resample(), [(2, 3, 4, 6)], None),
        "resblock": (ResBlock(), [(2, 8, 16, 16)], None),
        # dynamic batch and sequence: Shape -> Gather -> Concat -> Reshape folds per shape
        "attention": (Attention(), [(2, 5, 16), (3, 7, 16)], {"x": {0: "B", 1: "T"}}),
    }


@pytest.mark.parametrize("name", ["resblock", "attention", "resample"])
def test_torch_exported_modules_match_torch(name):
    torch = pytest.importorskip("torch", reason="torch.onnx.export makes the models")
    import io
    import warnings

    torch.manual_seed(0)
    mod, shapes, dynamic = _torch_modules(torch)[name]
    mod.eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                mod,
                (torch.randn(*shapes[0]),),
                f,
                opset_version=17,
                dynamo=False,
                input_names=["x"],
                dynamic_axes=dynamic,
            )
        except Exception as e:  # noqa: BLE001  (exporter missing pieces in this torch build)
            pytest.skip(f"torch.onnx.export failed: {type(e).__name__}: {e}")
    m = gox.load(f.getvalue())
    for shape in shapes:
        x = torch.randn(*shape)
        (got,) = m(x.numpy())
        with torch.no_grad():
            ref = mod(x).numpy()
        np.testing.assert_allclose(gg.asnumpy(got), ref, rtol=1e-5, atol=1e-5)


def test_torch_transformer_encoder_layer_dynamo_export_matches_torch():
    """torch.nn.TransformerEncoderLayer through the dynamo exporter (the TorchScript one fails
    inside torch in this build: docs/onnx.md gives its error), at two batch/sequence sizes."""
    torch = pytest.importorskip("torch", reason="torch.onnx.export makes the model")
    pytest.importorskip("onnxscript", reason="torch's dynamo ONNX exporter needs onnxscript")
    import warnings

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prog = torch.onnx.export(
                layer,
                (torch.randn(2, 5, 16),),
                dynamo=True,
                opset_version=18,
                optimize=False,
                dynamic_shapes=({0: torch.export.Dim("B"), 1: torch.export.Dim("T")},),
            )
        except Exception as e:  # noqa: BLE001  (exporter missing pieces in this torch build)
            pytest.skip(f"torch.onnx.export(dynamo=True) failed: {type(e).__name__}: {e}")
    m = gox.load(prog.model_proto)
    for shape in ((2, 5, 16), (3, 7, 16)):
        x = torch.randn(*shape)
        (got,) = m(x.numpy())
        with torch.no_grad():
            ref = layer(x).numpy()
        np.testing.assert_allclose(gg.asnumpy(got), ref, rtol=1e-5, atol=1e-5)


def test_conformance_counts_match_the_docs():
    """docs/onnx.md's conformance table: cases per folder and how many are refused at load
    (every other case passes test_conformance). The unmapped op types are printed."""
    counts, skips = {}, []
    for case in _cases():
        folder = case.split(os.sep)[0]
        unmapped = _unmapped(onnx.load(os.path.join(DATA, case, "model.onnx")))
        total, refused, at_call = counts.get(folder, (0, 0, 0))
        at_call += os.path.basename(case) in TRACE_UNSUPPORTED
        counts[folder] = (total + 1, refused + bool(unmapped), at_call)
        if unmapped:
            print(f"skip (refused at load): {skip_line(case, unmapped)}")
            skips.append(skip_line(case, unmapped))
    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "onnx.md")).read()
    for row in skips:  # the docs' skip list is this one, row for row
        assert row in page, row
    listed = [ln for ln in page.splitlines() if re.match(r"\| [a-z-]+/test_", ln)]
    assert len(listed) == len(skips), "docs/onnx.md lists skips the data no longer has"
    for folder, (total, refused, at_call) in counts.items():
        row = f"| {folder} | {total} | {total - refused - at_call} | {refused}"
        assert row in page, row


def test_huge_dilated_max_pool_window_is_refused_not_unrolled():
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="mp", kernel_shape=[70], dilations=[2], strides=[1]
    )
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 200])],
        [helper.make_empty_tensor_value_info("y")],
    )
    m = gox.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    with pytest.raises(gg.UnsupportedError, match="'mp'.*window"):
        m(np.zeros((1, 1, 200), np.float32))


_X4 = {"x": (1, 2, 3, 4), "cr": _F([]), "cs": _F([1, 1, 2, 2])}


@pytest.mark.parametrize(
    "op, spec, attrs, opset, match",
    [
        ("Resize", _X4, {}, 13, "nearest.*half_pixel.*round_prefer_floor"),
        (
            "Resize",
            _X4,
            {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
            13,
            "align_corners",
        ),
        ("Resize", _X4, {"mode": "cubic"}, 13, "cubic"),
        # opset 10: asymmetric coordinates; onnxruntime rounds nearest up when shrinking
        (
            "Resize",
            {"x": (1, 2, 4, 4), "cs": _F([1, 1, 2, 0.5])},
            {"mode": "nearest"},
            10,
            "opset 11",
        ),
        (
            "Resize",
            {"x": (1, 2, 4, 4), "cs": _F([1, 1, 2, 2])},
            {"mode": "linear"},
            10,
            "opset 11",
        ),
        ("Resize", {**_X4, "cs": _F([1, 1, 1.7, 2])}, {"mode": "linear"}, 13, "scales"),
        ("Resize", {**_X4, "cs": _F([1, 2, 2, 2])}, {"mode": "linear"}, 13, "N, C"),
        ("Resize", _X4, {"mode": "linear", "antialias": 1}, 18, "antialias"),
        (  # 4/6 is inexact in float32: onnxruntime's indices differ from floor(i * 6 / 4)
            "Resize",
            {**_X4, "x": (1, 1, 6, 4), "cs": _F([]), "cz": _i64(1, 1, 4, 4)},
            {
                "mode": "nearest",
                "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor",
            },
            13,
            "inexact",
        ),
        (
            "Resize",
            {**_X4, "cs": _F([]), "cz": _i64(1, 2, 1, 4)},
            {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
            13,
            "length of 1",
        ),
        ("Upsample", {"x": (1, 2, 3, 4), "cs": _F([1, 1, 2, 2])}, {"mode": "linear"}, 9, "linear"),
        ("Upsample", {"x": (1, 2, 3, 4), "cs": _F([1, 1, 1.2, 2])}, {}, 9, "exact"),
        ("OneHot", {"i": _F([0, 1]), "cd": _i64(3), "cv": _F([0, 1])}, {}, 11, "non-integer"),
    ],
)
def test_inexact_attribute_forms_are_refused_naming_the_node(op, spec, attrs, opset, match):
    """Attribute combinations the gg op does not compute exactly raise, never a wrong number."""
    model, feeds = _single_model(op, spec, attrs, opset)
    m = gox.load(model.SerializeToString())
    with pytest.raises(gg.UnsupportedError, match=rf"'n' \({op}.*{match}"):
        m(*(feeds[n] for n in m.input_names))


def _seq_model(nodes, inputs, out) -> bytes:
    g = helper.make_graph(nodes, "g", inputs, [helper.make_empty_tensor_value_info(out)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_sequence_ops_match_onnxruntime():
    """Sequences are lists while tracing: positions (negative too), insert/erase defaults,
    SplitToSequence by a scalar chunk and by sizes, ConcatFromSequence with new_axis."""
    ort = pytest.importorskip("onnxruntime", reason="sequence checks compare with onnxruntime")
    F, I64 = TensorProto.FLOAT, TensorProto.INT64
    mk, vi = helper.make_node, helper.make_tensor_value_info
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    cases = [
        (
            [
                mk("SplitToSequence", ["x", "k"], ["s"], axis=2),
                mk("SequenceErase", ["s"], ["s2"]),
                mk("SequenceInsert", ["s2", "x", "p"], ["s3"]),
                mk("SequenceAt", ["s3", "q"], ["y"]),
            ],
            {"k": np.array(3, np.int64), "p": np.array(-1, np.int64), "q": np.array(-2, np.int64)},
        ),
        (
            [
                mk("SplitToSequence", ["x", "k"], ["s"], axis=1),
                mk("ConcatFromSequence", ["s"], ["y"], axis=-1, new_axis=1),
            ],
            {"k": np.array([1, 1, 1], np.int64)},
        ),
        (
            [
                mk("SplitToSequence", ["x"], ["s"], axis=0, keepdims=0),
                mk("SequenceConstruct", ["x", "x"], ["t"]),
                mk("ConcatFromSequence", ["t"], ["c"], axis=0),
                mk("SequenceInsert", ["s", "c", "p"], ["s2"]),
                mk("SequenceLength", ["s2"], ["n"]),
                mk("SequenceAt", ["s2", "p"], ["y0"]),
                mk("ReduceSum", ["y0"], ["y"], keepdims=0),
            ],
            {"p": np.array(0, np.int64)},
        ),
    ]
    for nodes, extra in cases:
        feeds = {"x": x, **extra}
        ins = [vi("x", F, [2, 3, 4])] + [vi(k, I64, list(v.shape)) for k, v in extra.items()]
        data = _seq_model(nodes, ins, "y")
        (ref,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
        m = gox.load(data)
        (got,) = m(*(feeds[n] for n in m.input_names))
        np.testing.assert_array_equal(gg.asnumpy(got), ref)
    bad = _seq_model(
        [mk("SequenceConstruct", ["x"], ["s"]), mk("SequenceAt", ["s", "p"], ["y"], name="at")],
        [vi("x", F, [2, 3, 4]), vi("p", I64, [])],
        "y",
    )
    with pytest.raises(gg.errors.IndexOutOfRangeError, match="'at'.*position 3"):
        gox.load(bad)(x, np.array(3, np.int64))


def _declared_model(decl, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", dtype, decl)],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "decl, dtype, match",
    [
        ([2, 5], TensorProto.FLOAT, "dimension 1: \\(4\\) vs \\(5\\)"),
        (["N", 4, 1], TensorProto.FLOAT, "rank"),
        ([2, 4], TensorProto.INT64, "type"),
    ],
)
def test_declared_shape_conflicting_with_inference_is_refused_at_load(decl, dtype, match):
    with pytest.raises(gox.OnnxError, match=f"shape-inference conflict.*{match}"):
        gox.load(_declared_model(decl, dtype))
    gox.load(_declared_model([2, 4]))  # the consistent declaration loads


def test_declared_shape_conflicting_with_the_trace_is_refused_at_call():
    """onnx cannot infer a Reshape to a shape given as an input; the traced shape is checked
    against the declaration when the model runs."""
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [12]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])],
    )
    m = gox.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.arange(12, dtype=np.float32)
    (y,) = m(x, _i64(2, 6))
    assert gg.asnumpy(y).shape == (2, 6)
    with pytest.raises(gox.OnnxError, match=r"'y' is declared with shape \[2, 6\].*\[3, 4\]"):
        m(x, _i64(3, 4))
