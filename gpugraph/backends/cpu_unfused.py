"""backend="cpu": an elementwise op outside any fused group (``fuse=False``) as a one-op native
kernel.

On the NumPy backend such an op is one ufunc call into the arena, ~0.9 us of fixed cost; the
same op as a generated kernel called through the extension entry point (cpu_native) costs
~0.07 us plus the loop. The op gets the kernel the CUDA codegen makes for a group of one
(codegen/cuda.py ``emit_kernel``) and then takes exactly the path of a fused group
(``cpu_backend._prepare_fused``): the same loop nest for broadcasts, refusals, policy, batch
compile and runner. An op the codegen cannot express, or one the policy leaves to NumPy
(``cpu_select.unfused_refusal``), keeps the NumPy backend's runner, which the program inlines
as a ufunc call with ``out=``.
"""

from __future__ import annotations

from ..codegen import emit_kernel
from ..codegen.cuda import unsupported_reason
from ..ir import GraphBuilder, Node
from ..ops.fused import FUSED
from ..ops.registry import get_op
from .base import Runner
from .cpu_select import unfused_refusal


def one_op_group(node: Node) -> Node | None:
    """``node`` as a fused group of one (its body, CUDA source and kernel name), or None where
    it is not an elementwise op the codegen expresses."""
    if get_op(node.op).family != "elementwise" or len(node.outputs) != 1:
        return None
    if unsupported_reason(node) is not None:
        return None
    b = GraphBuilder()
    ins = [b.add_input(v.type) for v in node.inputs]
    member = b.add_node(node.op, ins, node.attrs, [node.outputs[0].type], node.loc)
    body = b.build([member.output])
    kernel = emit_kernel(body)
    attrs = {"body": body, **kernel.attrs()}
    return Node(FUSED.name, list(node.inputs), attrs, [node.outputs[0].type], node.loc)


def prepare_unfused(node: Node, backend) -> Runner | None:
    """The native runner of the elementwise op ``node``, or None: run it as NumPy does."""
    group = one_op_group(node)
    if group is None or unfused_refusal(group) is not None:
        return None
    from .cpu_backend import _prepare_fused  # cpu_backend imports this module

    runner = _prepare_fused(group, backend)
    if hasattr(runner, "cpu_refusal"):
        return None
    runner.cpu_one_op = True  # type: ignore[attr-defined]  (explain() counts these apart)
    return runner
