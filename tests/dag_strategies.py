"""Helpers shared by the stream and race tests: random DAG recipes for
``gpugraph.testing.races.dag_function`` and a NumPy lowering with several streams."""

from __future__ import annotations

from hypothesis import strategies as st

import gpugraph as gg
from gpugraph.testing.races import BINARY, UNARY


def dag_recipes(max_size: int):
    """Lists of (op, operand pick, operand pick) steps, 1 to ``max_size`` long."""
    return st.lists(
        st.tuples(
            st.sampled_from(UNARY + BINARY + ("reshape",)), st.integers(0, 99), st.integers(0, 99)
        ),
        min_size=1,
        max_size=max_size,
    )


def lower(fn, *args, streams=4, fuse=False):
    # fuse=False by default: these tests are about streams and memory, not fusion.
    # streams=4: up to 4, as a GPU would get (NumPy's own default is 1 stream).
    return gg.jit(fn, backend="numpy", streams=streams, fuse=fuse).lower(*args)
