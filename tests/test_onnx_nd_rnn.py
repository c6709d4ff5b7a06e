"""ONNX GatherND / ScatterND and RNN / GRU / LSTM (gg.scan) against onnxruntime, and
torch.nn.GRU / LSTM exports against torch."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg

onnx = pytest.importorskip("onnx", reason="ONNX import needs the onnx package")
ort = pytest.importorskip("onnxruntime", reason="these checks compare with onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import gpugraph.onnx as gox  # noqa: E402


def _one_node(op, feeds: dict, inits: dict, attrs: dict, n_out: int, opset: int = 18) -> bytes:
    """One-node model: inputs ``feeds`` (graph inputs) and ``inits`` (initializers); ``_order``
    in attrs lists the node's inputs ('' keeps an optional input absent)."""
    attrs = dict(attrs)
    names = list(feeds) + list(inits)
    order = attrs.pop("_order", names)
    ins = [
        vi
        for vi in (
            helper.make_tensor_value_info(
                k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)
            )
            for k, v in feeds.items()
        )
    ]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, order, outs, name="n", **attrs)
    g = helper.make_graph(
        [node],
        "g",
        ins,
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _gg(data: bytes, feeds: dict) -> list:
    m = gox.load(data)
    return [gg.asnumpy(v) for v in m(*(feeds[n] for n in m.input_names))]


def _run_both(op, feeds: dict, inits: dict, attrs: dict, n_out: int, opset: int = 18):
    """The one-node model run by gpugraph and onnxruntime."""
    data = _one_node(op, feeds, inits, attrs, n_out, opset)
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    return _gg(data, feeds), ref


def _close(got, ref, tol=1e-5):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, r.shape, g.dtype, r.dtype)
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


_R = np.random.default_rng(0)
_X = _R.standard_normal((2, 3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize(
    "data, idx, batch_dims",
    [
        (_X, np.array([[0, 1], [1, -1]], np.int64), 0),
        (_X, np.array([[[1, 2, 3]], [[0, 0, -4]]], np.int64), 0),
        (_X, np.array([[1], [0]], np.int64), 1),
        (_X, np.array([[[2, 1], [0, 3]], [[1, 1], [2, 0]]], np.int64), 1),
        (_X, np.array([[[1], [3], [0]], [[0], [0], [-2]]], np.int64), 2),
        (_X[0, 0], np.zeros((3, 0), np.int64), 0),
    ],
)
def test_gather_nd_matches_onnxruntime(data, idx, batch_dims):
    got, ref = _run_both("GatherND", {"x": data, "i": idx}, {}, {"batch_dims": batch_dims}, 1)
    _close(got, ref)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize(
    "idx, upd_shape",
    [
        (np.array([[0, 1], [1, 2], [0, -1]], np.int64), (3, 4, 5)),
        (np.array([[[1, 2, 3]], [[0, 0, 1]]], np.int64), (2, 1, 5)),
        (np.array([[1], [0]], np.int64), (2, 3, 4, 5)),
    ],
)
def test_scatter_nd_matches_onnxruntime(idx, upd_shape, reduction):
    upd = _R.standard_normal(upd_shape).astype(np.float32)
    attrs = {} if reduction == "none" else {"reduction": reduction}
    got, ref = _run_both("ScatterND", {"x": _X, "i": idx, "u": upd}, {}, attrs, 1)
    _close(got, ref)


def test_nd_out_of_range_index_raises():
    node = helper.make_node("GatherND", ["x", "i"], ["y"])
    g = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(_X.shape)),
            helper.make_tensor_value_info("i", TensorProto.INT64, [1, 2]),
        ],
        [helper.make_empty_tensor_value_info("y")],
    )
    m = gox.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    with pytest.raises(gg.errors.IndexOutOfRangeError):
        m(_X, np.array([[0, 3]], np.int64))  # 3 is past dim 1 (size 3), though 0*3+3 < 6


def _rnn_inputs(op, direction, batch=3, t=4, inp=5, hidden=6, layout=0, lens=None, peep=False):
    g = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    d = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(1)

    def f(*s):
        return (rng.standard_normal(s) * 0.5).astype(np.float32)

    x = f(batch, t, inp) if layout else f(t, batch, inp)
    feeds = {"X": x}
    inits = {"W": f(d, g * hidden, inp), "R": f(d, g * hidden, hidden), "B": f(d, 2 * g * hidden)}
    order = ["X", "W", "R", "B"]
    hshape = (batch, d, hidden) if layout else (d, batch, hidden)
    if lens is not None:
        feeds["L"] = np.asarray(lens, np.int32)
    order.append("L" if lens is not None else "")
    feeds["H"] = f(*hshape)
    order.append("H")
    if op == "LSTM":
        feeds["C"] = f(*hshape)
        order.append("C")
        if peep:
            inits["P"] = f(d, 3 * hidden)
            order.append("P")
    return feeds, inits, order


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_recurrent_layers_match_onnxruntime(op, direction):
    feeds, inits, order = _rnn_inputs(op, direction)
    attrs = {"hidden_size": 6, "direction": direction, "_order": order}
    got, ref = _run_both(op, feeds, inits, attrs, 3 if op == "LSTM" else 2)
    _close(got, ref)


@pytest.mark.parametrize(
    "op, extra",
    [
        ("GRU", {"linear_before_reset": 1}),
        ("LSTM", {"clip": 0.7, "_peep": True}),
        ("RNN", {"activations": ["Relu"]}),
        ("GRU", {"activations": ["Tanh", "Relu", "Sigmoid", "Tanh"], "_dir": "bidirectional"}),
        # activations with alpha/beta, consumed in order by those that take one
        ("RNN", {"activations": ["Affine"], "activation_alpha": [0.5], "activation_beta": [0.1]}),
        ("RNN", {"activations": ["LeakyRelu"]}),  # the default alpha
        (
            "GRU",
            {
                "activations": ["HardSigmoid", "ScaledTanh"],
                "activation_alpha": [0.3, 0.8],
                "activation_beta": [0.4, 1.2],
            },
        ),
        (
            "LSTM",
            {
                "activations": ["HardSigmoid", "LeakyRelu", "Elu"],
                "activation_alpha": [0.25, 0.1, 0.9],
                "activation_beta": [0.45],
            },
        ),
        (
            "LSTM",
            {
                "activations": ["Sigmoid", "Softsign", "Softplus"] * 2,
                "_dir": "bidirectional",
            },
        ),
        (
            "RNN",
            {
                "activations": ["ThresholdedRelu", "Elu"],
                "activation_alpha": [0.2],
                "_dir": "bidirectional",
            },
        ),
        ("LSTM", {"input_forget": 1}),
        ("LSTM", {"input_forget": 1, "clip": 0.7, "_peep": True, "_dir": "bidirectional"}),
    ],
)
def test_recurrent_attribute_forms_match_onnxruntime(op, extra):
    extra = dict(extra)
    direction = extra.pop("_dir", "forward")
    feeds, inits, order = _rnn_inputs(
        op, direction, layout=extra.get("layout", 0), peep=extra.pop("_peep", False)
    )
    attrs = {"hidden_size": 6, "direction": direction, "_order": order, **extra}
    got, ref = _run_both(op, feeds, inits, attrs, 3 if op == "LSTM" else 2)
    _close(got, ref)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_batch_major_layout(op):
    """layout=1 (batch first) against onnxruntime on the same data in layout 0 (onnxruntime's
    CPU kernels refuse layout 1)."""
    n_out = 3 if op == "LSTM" else 2
    feeds, inits, order = _rnn_inputs(op, "bidirectional", layout=1, peep=op == "LSTM")
    attrs = {"hidden_size": 6, "direction": "bidirectional", "_order": order}
    got = _gg(_one_node(op, feeds, inits, {**attrs, "layout": 1}, n_out), feeds)
    seq_major = {k: np.swapaxes(v, 0, 1) for k, v in feeds.items()}
    _, ref = _run_both(op, seq_major, inits, attrs, n_out)
    ref = [np.transpose(ref[0], (2, 0, 1, 3)), *(np.swapaxes(r, 0, 1) for r in ref[1:])]
    _close(got, ref)


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_recurrent_sequence_lens_match_onnxruntime(op, direction):
    feeds, inits, order = _rnn_inputs(op, direction, lens=[4, 1, 3])
    attrs = {"hidden_size": 6, "direction": direction, "_order": order}
    got, ref = _run_both(op, feeds, inits, attrs, 3 if op == "LSTM" else 2)
    _close(got, ref)


def test_recurrent_refuses_unknown_activation():
    feeds, inits, order = _rnn_inputs("RNN", "forward")
    attrs = {"hidden_size": 6, "activations": ["Gelu"]}
    node = helper.make_node("RNN", order, ["y"], name="r", **attrs)
    ins = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
        for k, v in feeds.items()
    ]
    g = helper.make_graph(
        [node],
        "g",
        ins,
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = gox.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(gg.UnsupportedError, match="'r' \\(RNN.*activation"):
        m(*(feeds[n] for n in m.input_names))


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_torch_recurrent_exports_match_torch(kind):
    torch = pytest.importorskip("torch", reason="torch.onnx.export makes the models")
    import io
    import warnings

    torch.manual_seed(0)
    mod = getattr(torch.nn, kind)(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    mod.eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                mod,
                (torch.randn(2, 4, 5),),
                f,
                opset_version=17,
                dynamo=False,
                input_names=["x"],
                dynamic_axes={"x": {0: "B", 1: "T"}},
            )
        except Exception as e:  # noqa: BLE001  (exporter missing pieces in this torch build)
            pytest.skip(f"torch.onnx.export failed: {type(e).__name__}: {e}")
    m = gox.load(f.getvalue())
    assert kind in {n.ctx.op_type for n in m._nodes}
    for shape in ((2, 4, 5), (3, 6, 5)):
        x = torch.randn(*shape)
        got = m(x.numpy())
        with torch.no_grad():
            ref = mod(x)
        ref = [ref[0], *(ref[1] if kind == "LSTM" else (ref[1],))]
        for g, r in zip(got, ref):
            np.testing.assert_allclose(gg.asnumpy(g), r.numpy(), rtol=1e-5, atol=1e-5)
