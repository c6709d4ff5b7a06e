"""The onnx wheel's `light` model-zoo nets (backend/test/data/light) made checkable.

Their weights are ``ConstantOfShape`` nodes of one value each, and they end in a Softmax: a
wrong convolution would still give the same saturated output. ``randomized`` replaces each
such weight with varied values (value * U(0.5, 1.5): signs and scales kept, so variances stay
positive) and drops the final Softmax, so outputs are logits that differ per class.
"""

from __future__ import annotations

import os

import numpy as np

LIGHT_NETS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def light_path(name: str) -> str:
    import onnx

    return os.path.join(
        os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx"
    )


def randomized(model, seed: int = 0):
    """``model`` (an onnx.ModelProto, changed in place and returned) with random weights and
    no final Softmax."""
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in init:
            v = numpy_helper.to_array(n.attribute[0].t).reshape(-1)[0]
            # float32 draws: vgg19's 143M weights in ~1 s (float64 uniform took 10 s)
            w = rng.random(init[n.input[0]].tolist(), dtype=np.float32)
            w += np.float32(0.5)
            w *= np.float32(v)
            g.initializer.append(numpy_helper.from_array(w, n.output[0]))
        else:
            keep.append(n)
    if keep[-1].op_type == "Softmax":
        g.output[0].name = keep.pop().input[0]
        g.output[0].type.tensor_type.ClearField("shape")  # unknown (no dims would say scalar)
    del g.node[:]
    g.node.extend(keep)
    return model


def rebatched(model, batch: int):
    """``model`` (changed in place and returned) taking ``batch`` images instead of 1: the
    input's and output's leading dim, and the ``[1, ...]`` shapes the nets' Reshapes of
    activations use (a Reshape of a weight keeps its shape)."""
    from onnx import numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    data = [vi for vi in g.input if vi.name not in init]  # IR 3 lists initializers too
    for vi in (*data, *g.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_value == 1:
            dims[0].dim_value = batch
    for n in g.node:
        if n.op_type == "Reshape" and n.input[0] not in init and n.input[1] in init:
            shape = numpy_helper.to_array(init[n.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = batch
                init[n.input[1]].CopyFrom(numpy_helper.from_array(shape, n.input[1]))
    return model
