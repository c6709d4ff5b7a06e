"""Code generation for fused groups (CUDA C through templates; names from source hashes)."""

from __future__ import annotations

from .cuda import (
    C_TYPES,
    Kernel,
    c_type,
    emit_kernel,
    inline_literal,
    is_inline_constant,
    kernel_name,
    unsupported_reason,
)

__all__ = [
    "C_TYPES",
    "Kernel",
    "c_type",
    "emit_kernel",
    "inline_literal",
    "is_inline_constant",
    "kernel_name",
    "unsupported_reason",
]
