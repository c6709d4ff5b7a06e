"""The CuPy path's per-call loop binds each launch once (gpugraph/launch_bind.py), proved on
the logging CuPy stand-in (tests/test_cupy_backend.py): the callables handed to ``run_on`` are
the same objects on every call, no launch is bound again after the first call (top level and
region bodies), results equal NumPy's, and no user array is kept alive between calls."""

from __future__ import annotations

import gc
import weakref

import numpy as np

import gpugraph as gg
from gpugraph import launch_bind
from gpugraph.testing.races import branchy_function

try:  # the module pytest itself imports (tests/ is not a package): one stand-in class set
    from test_cupy_backend import X, fake_jit, region_runners_on_the_stand_in  # noqa: F401
except ImportError:  # run from elsewhere, with the repository root on sys.path
    from tests.test_cupy_backend import X, fake_jit, region_runners_on_the_stand_in  # noqa: F401


def with_views(x):
    """Several streams, and reshapes of an input and of an output (views made per call)."""
    y = branchy_function(3, 2)(gg.reshape(x, (8, 8)))
    return gg.reshape(y, (192,)), y * 2.0


def reference(x):
    y = branchy_function(3, 2)(x.reshape(8, 8))
    return y.reshape(192), y * 2.0


def spy_run_on(monkeypatch, backend) -> list:
    calls: list = []
    real = backend.run_on

    def run_on(stream, fn):
        calls.append(fn)
        real(stream, fn)

    monkeypatch.setattr(backend, "run_on", run_on)
    return calls


def test_the_same_bound_calls_run_on_every_call(monkeypatch):
    j = fake_jit(with_views, streams=3)
    xf = X.reshape(64)
    c = j.lower(xf)
    assert c.schedule.num_streams >= 2
    assert any(la.runner is None for la in c.executable.launches), "the test needs a view"
    calls = spy_run_on(monkeypatch, c.backend)
    per_call = []
    for k in (1.0, -2.0, 0.5):
        got = j(xf * k)
        for g, want in zip(got, reference(xf.reshape(8, 8) * k)):
            np.testing.assert_allclose(g, want, rtol=1e-6)
        per_call.append(list(calls))
        calls.clear()
    first = per_call[0]
    assert len(first) == sum(la.runner is not None for la in c.executable.launches)
    assert all(isinstance(fn, launch_bind.BoundLaunch) for fn in first)
    for later in per_call[1:]:  # a closure (or any object) made per launch per call fails here
        assert len(later) == len(first)
        assert all(a is b for a, b in zip(first, later))


def test_no_user_array_outlives_its_call():
    j = fake_jit(with_views, streams=3)
    xf = X.reshape(64)
    j(xf)
    x = xf * 3.0
    dead = weakref.ref(x)
    outs = j(x)
    kept = [weakref.ref(o) for o in outs]
    del x, outs
    gc.collect()
    assert dead() is None and all(r() is None for r in kept)


def loops(x):
    def body(i, v):  # two independent chains: a wide body (side streams on CuPy)
        a, b = v
        return gg.sin(a) * 0.5 + gg.reshape(gg.reshape(b, (64,)) * 0.25, (8, 8)), gg.cos(b) + a

    a, b = gg.fori_loop(0, 3, body, (x, x * 2.0))
    w = gg.while_loop(lambda v: v.sum() < 40, lambda v: v * 1.5 + 0.1, gg.abs(a), max_steps=50)
    return w + b


def loops_reference(x):
    a, b = x, x * 2.0
    for _ in range(3):
        a, b = np.sin(a) * 0.5 + b * 0.25, np.cos(b) + a
    w = np.abs(a)
    for _ in range(50):
        if w.sum() >= 40:
            break
        w = w * 1.5 + 0.1
    return w + b


def test_region_bodies_are_bound_once(monkeypatch, region_runners_on_the_stand_in):
    made = []

    class Counted(launch_bind.BoundLaunch):
        __slots__ = ()

        def __init__(self, *args) -> None:
            made.append(self)
            super().__init__(*args)

    monkeypatch.setattr(launch_bind, "BoundLaunch", Counted)
    j = fake_jit(loops, streams=2)
    np.testing.assert_allclose(j(X), loops_reference(X), rtol=1e-5)
    first = len(made)
    assert first > 2  # the top level and both loops' bodies were bound
    for k in (0.5, -1.0):  # later calls, many body runs each: nothing is bound again
        np.testing.assert_allclose(j(X * k), loops_reference(X * k), rtol=1e-5)
    assert len(made) == first
