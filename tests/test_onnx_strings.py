"""String tensors in ONNX models: a host pre-stage (StringNormalizer on NumPy object arrays)
before the compiled numeric graph, checked against onnxruntime; strings reaching numeric ops
and unsupported locales are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg

onnx = pytest.importorskip(
    "onnx", reason="ONNX import needs the onnx package (pip install gpugraph[onnx])"
)
from onnx import TensorProto, helper  # noqa: E402

import gpugraph.onnx as gox  # noqa: E402

# Letters whose case mappings are special: ß and ﬁ have no one-character upper case, İ lowers
# to i, ǅ is title case, ᾀ uppers to ᾈ (not the two-letter full mapping), final sigma, accents.
WORDS = ["Straße", "İstanbul", "ǅemal", "ᾀx", "ﬁne", "ΣΑΣ", "ÀÉ", "àé", "MonDay", "monday", ""]


def _model(shape, extra_numeric=False, **attrs) -> bytes:
    nodes = [helper.make_node("StringNormalizer", ["s"], ["y"], name="norm", **attrs)]
    inputs = [helper.make_tensor_value_info("s", TensorProto.STRING, shape)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.STRING, None)]
    if extra_numeric:  # a numeric graph beside it: both stages in one call
        nodes.append(helper.make_node("Tanh", ["x"], ["t"]))
        inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]))
        outputs.insert(0, helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3]))
    g = helper.make_graph(nodes, "strings", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def _strings(v) -> np.ndarray:
    return np.array(v, dtype=object)


# onnxruntime's default locale (en_US.UTF-8) is often not installed; C.UTF-8 and C always are.
CASES = [
    ({"case_change_action": "UPPER", "locale": "C.UTF-8"}, [len(WORDS)], WORDS),
    ({"case_change_action": "LOWER", "locale": "C.UTF-8"}, [len(WORDS)], WORDS),
    ({"case_change_action": "UPPER", "locale": "C"}, [len(WORDS)], WORDS),  # ASCII only
    ({"case_change_action": "LOWER", "locale": "C"}, [len(WORDS)], WORDS),
    ({"stopwords": ["monday", "àé", "ss"], "locale": "C.UTF-8"}, [len(WORDS)], WORDS),
    ({"stopwords": ["monday", "àé"], "locale": "C"}, [len(WORDS)], WORDS),
    ({"stopwords": ["MonDay"], "is_case_sensitive": 1, "locale": "C"}, [1, 3], [WORDS[7:10]]),
    ({"stopwords": ["a", "B"], "case_change_action": "UPPER", "locale": "C"}, [1, 2], [["A", "b"]]),
    ({"stopwords": ["a", "b"], "locale": "C"}, [2], ["a", "b"]),  # all removed: [""]
]


@pytest.mark.parametrize("attrs, shape, x", CASES)
def test_string_normalizer_matches_onnxruntime(attrs, shape, x):
    ort = pytest.importorskip("onnxruntime", reason="compared against onnxruntime")
    data = _model(shape, **attrs)
    x = _strings(x)
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"s": x})[0]
    m = gox.load(data)
    (got,) = m(x)
    assert got.dtype == object and got.shape == ref.shape and got.tolist() == ref.tolist()
    # str (U) and UTF-8 bytes (S) arrays are accepted too; the input is not modified
    x_u = np.array(x.tolist(), dtype=str) if x.size else x
    assert m(x_u)[0].tolist() == ref.tolist()
    assert x_u.tolist() == x.tolist()
    assert m.fn(m.params, x)[0].tolist() == ref.tolist()


def test_default_locale_is_unicode_and_strings_bypass_the_compiled_graph():
    """The default (en_US-like) locale is the Unicode simple case mapping; a numeric graph
    beside the string stage is compiled and run in the same call, outputs in graph order."""
    m = gox.load(_model([4], extra_numeric=True, case_change_action="UPPER", stopwords=["x"]))
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    t, y = m(_strings(["ß", "ǅ", "X", "ᾳ"]), x)
    assert y.tolist() == ["ß", "Ǆ", "ᾼ"]
    np.testing.assert_allclose(gg.asnumpy(t), np.tanh(x), rtol=1e-6)
    assert m.input_names == ("s", "x") and m.output_names == ("t", "y")
    # the compiled function takes only the numeric input
    assert "tanh" in m.lower(_strings(["a"] * 4), x).explain()


@pytest.mark.parametrize(
    "attrs, match",
    [
        ({"locale": "tr_TR"}, "locale 'tr_TR'.*Turkic"),
        ({"locale": "az_AZ.UTF-8"}, "Turkic"),
        ({"locale": "en_US.ISO-8859-1"}, "codeset ISO-8859-1"),
        ({"locale": "english please"}, "locale 'english please'"),
        ({"case_change_action": "TITLE"}, "case_change_action='TITLE'"),
    ],
)
def test_unsupported_attributes_are_refused_naming_the_node(attrs, match):
    m = gox.load(_model([2], **attrs))
    with pytest.raises(gg.UnsupportedError, match=f"'norm'.*{match}"):
        m(_strings(["a", "b"]))


@pytest.mark.parametrize("shape", [[2, 2], [0], [1, 1, 1]])
def test_input_shapes_other_than_c_or_1_c_are_errors(shape):
    m = gox.load(_model(None))
    with pytest.raises(gg.GpuGraphError, match=r"\[C\] or \[1, C\]"):
        m(np.full(shape, "a", dtype=object))


def test_strings_reaching_numeric_ops_are_refused_at_load():
    def model(nodes, out_type):
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
            [helper.make_tensor_value_info("y", out_type, None)],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    cast = model(
        [
            helper.make_node("StringNormalizer", ["s"], ["n"]),
            helper.make_node("Cast", ["n"], ["y"], name="to_float", to=TensorProto.FLOAT),
        ],
        TensorProto.FLOAT,
    )
    with pytest.raises(gg.UnsupportedError, match="'to_float'.*string tensor 'n'"):
        gox.load(cast)
    ident = model(
        [
            helper.make_node("Identity", ["s"], ["i"]),
            helper.make_node("StringNormalizer", ["i"], ["y"], name="late"),
        ],
        TensorProto.STRING,
    )
    with pytest.raises(gg.UnsupportedError, match="string tensor 's'"):
        gox.load(ident)
