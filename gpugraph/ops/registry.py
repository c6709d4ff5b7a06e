"""The op table. One OpDef per op holds every rule about it; families are built by factories
in the sibling modules. Nothing outside this table switches on op names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedError
from ..ir import TensorType

# Which rules each family must provide (checked by tests/test_op_table.py).
FAMILY_RULES: dict[str, tuple[str, ...]] = {
    "elementwise": ("infer", "impl", "cuda", "vjp", "jvp"),
    "reduce": ("infer", "impl", "vjp", "jvp"),
    "linalg": ("infer", "impl", "vjp", "jvp"),
    "shape": ("infer", "impl", "vjp", "jvp"),
    "index": ("infer", "impl", "vjp", "jvp"),
    "creation": ("infer", "impl"),
    "nondiff": ("infer", "impl"),
    "internal": ("infer", "impl"),
    # region ops (ops/control.py): vjp exists too, but is tested in test_control_flow.py
    "control": ("infer", "impl", "jvp"),
}


@dataclass
class OpDef:
    """Everything about one op.

    infer(in_types, **attrs) -> list[TensorType]; raises ShapeError/DTypeError naming the op.
    impl(xp, *arrays, **attrs) -> array or tuple of arrays; written against the array API so
        NumPy and CuPy share it. If ``out_kw`` it also accepts ``out=`` (a ufunc).
    cuda: for elementwise ops, a C++ expression template over ``{0}``, ``{1}``, ... (already
        of the op's compute type); ``{T}`` is the output C type.
    vjp(cts, outs, *inputs, **attrs) -> one cotangent per input (None = zero). ``cts`` and
        ``outs`` are lists; every value is an array or a tracer and the rule uses gg ops, so the
        backward is ordinary graph.
    jvp(tangents, outs, *inputs, **attrs) -> list of output tangents (None = zero).
    """

    name: str
    family: str
    infer: Callable[..., list[TensorType]]
    impl: Callable[..., Any]
    cuda: str | None = None
    vjp: Callable[..., Any] | None = None
    jvp: Callable[..., Any] | None = None
    out_kw: bool = False
    differentiable: bool = True
    doc: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def elementwise(self) -> bool:
        return self.family == "elementwise"


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    assert opdef.name not in REGISTRY, f"op {opdef.name} registered twice"
    assert opdef.family in FAMILY_RULES, opdef.family
    REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnsupportedError(f"op '{name}' is not registered in gpugraph") from None
