"""Exception hierarchy. Every error a user can trigger derives from GpuGraphError."""

from __future__ import annotations


class GpuGraphError(Exception):
    """Base class of every error gpugraph raises for user mistakes."""


class ShapeError(GpuGraphError, ValueError):
    """Operand shapes are incompatible with an op."""


class DTypeError(GpuGraphError, TypeError):
    """Operand dtypes are not supported by an op."""


class TraceError(GpuGraphError):
    """Something a traced function did cannot be expressed as a static graph."""


class UnsupportedError(GpuGraphError, NotImplementedError):
    """An op, dtype or feature is not implemented (yet); the message names it."""


class ArgumentError(GpuGraphError, ValueError):
    """An op argument (an axis, a mode, an exponent...) has a value the op does not accept."""


class IndexOutOfRangeError(ShapeError, IndexError):
    """An index (of ``take`` or basic indexing) is outside its axis; raised at run time too."""
