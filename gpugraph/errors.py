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
