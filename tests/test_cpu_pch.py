"""The cpu backend's precompiled prelude (backends/cpu_pch.py): built beside the first compile
of a cache, used by later ones, ignored where stale, and invisible to library cache keys."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from gpugraph import cache
from gpugraph.backends import cpu_backend, cpu_native, cpu_pch
from gpugraph.codegen.cuda import emit_kernel
from gpugraph.ir import GraphBuilder, TensorType

pytestmark = pytest.mark.skipif(
    cpu_backend.status().startswith("unavailable"), reason="no host C++ compiler"
)


def _kernel(scale: float):
    b = GraphBuilder()
    x = b.add_input(TensorType((7,), np.dtype("float64")))
    c = b.add_node("constant", [], {"value": np.array(scale)}, [TensorType((), x.dtype)]).output
    y = b.add_node("multiply", [x, c], {}, [x.type]).output
    return emit_kernel(b.build([b.add_node("tanh", [y], {}, [x.type]).output]))


def _compile_and_run(scale: float) -> cpu_backend._Kernel:
    kernel = _kernel(scale)
    backend = cpu_backend.CpuBackend()
    k = backend.kernel(kernel.source, kernel.name, 2, [("float64", 7, False), ("float64", 7, True)])
    backend.compile_pending()
    x, out = np.linspace(-3, 3, 7), np.empty(7)
    assert k.py is not None and k.py(x, out)  # through the extension module, so it compiled
    np.testing.assert_allclose(out, np.tanh(scale * x), rtol=1e-15)
    return k


def _pch_files() -> list:
    folder = cache.cache_dir() / cpu_pch.KIND
    return sorted(folder.glob("*.gch")) if folder.is_dir() else []


def _includes(monkeypatch) -> list[list[str]]:
    """Record the compiler runs' command lines."""
    seen: list[list[str]] = []
    run = subprocess.run

    def spy(cmd, *a, **kw):
        seen.append(list(cmd))
        return run(cmd, *a, **kw)

    monkeypatch.setattr(cpu_backend.subprocess, "run", spy)
    return seen


def test_first_compile_builds_the_pch_beside_it_and_later_ones_use_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path))
    seen = _includes(monkeypatch)
    _compile_and_run(1.5)
    assert not any("-include" in c for c in seen if "-x" in c and "c++" in c)  # inline text
    cpu_pch.wait()
    assert len(_pch_files()) == 1
    _compile_and_run(2.5)
    cmd = seen[-1]
    assert "-include" in cmd  # the library after it includes the header
    # and the compiler loads the .gch rather than the text (-H marks a loaded PCH with "!")
    head = cmd[cmd.index("-include") + 1]
    flags = [*cpu_backend.flags(), *(cpu_native.include_flags() or ())]
    probe = [cpu_backend.compiler(), *flags, "-include", head, "-H", "-fsyntax-only", "-x", "c++"]
    proc = subprocess.run([*probe, "-"], input="", capture_output=True, text=True, check=True)
    assert f"! {head}.gch" in proc.stderr


def test_a_stale_or_broken_pch_falls_back_to_the_text(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path))
    _compile_and_run(1.25)
    cpu_pch.wait()
    (gch,) = _pch_files()
    gch.write_bytes(b"not a precompiled header")
    _compile_and_run(3.25)  # the compiler reads the header's text instead, silently
    # a .gch built with other flags (another -march, say) is stale: the same
    header = gch.with_suffix("")
    includes = cpu_native.include_flags() or ()
    cmd = [cpu_backend.compiler(), "-O0", "-std=c++17", *includes, "-x", "c++-header", str(header)]
    subprocess.run([*cmd, "-o", str(gch)], capture_output=True, check=True)
    assert gch.stat().st_size > 1000
    _compile_and_run(4.25)


def test_library_cache_keys_do_not_depend_on_the_pch(tmp_path, monkeypatch):
    """The same kernel built inline (no .gch yet) and through the .gch is the same entry."""
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path / "a"))
    inline = cpu_backend._indexed(_compile_and_run(5.5))
    cpu_pch.wait()
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path / "b"))
    _compile_and_run(6.5)  # the first compile of cache b starts its .gch
    cpu_pch.wait()
    assert _pch_files()
    with_pch = cpu_backend._indexed(_compile_and_run(5.5))
    assert inline is not None and with_pch is not None and inline.name == with_pch.name
