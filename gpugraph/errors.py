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


class ArenaMemoryError(GpuGraphError, MemoryError):
    """A compiled plan's arena could not be allocated; the message gives its size."""


class DonationError(GpuGraphError, ValueError):
    """A donated argument was used after the call it was donated to, or cannot be donated."""


class EscapedTracerError(TraceError):
    """A traced value was used after the trace that made it had ended (it was stored outside
    the traced function, e.g. appended to an outer list). JAX calls this an
    UnexpectedTracerError."""


class GpuGraphWarning(UserWarning):
    """Base class of the warnings gpugraph gives; filter them all with this class."""


class CapturedArrayWarning(GpuGraphWarning):
    """A traced function closed over a large concrete array: it was copied into the graph as a
    constant, so changing the array later does not change what the compiled function computes."""


class ArgumentError(GpuGraphError, ValueError):
    """An op argument (an axis, a mode, an exponent...) has a value the op does not accept."""


class IndexOutOfRangeError(ShapeError, IndexError):
    """An index (of ``take`` or basic indexing) is outside its axis; raised at run time too."""
