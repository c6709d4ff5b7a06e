"""The CPU backend's fast entry point: a CPython extension module in each kernel library.

Through ctypes, one kernel call cost ~1 us per array argument (``a.ctypes.data`` builds an
object, and each ``c_void_p`` is converted). Where Python's and NumPy's C headers are found,
the library the backend compiles (``cpu_backend._build``) also defines a small extension
module: one METH_FASTCALL function per kernel that takes the arrays themselves, checks each
(an ndarray of the kernel's dtype and element count, C-contiguous, aligned, in native byte
order, writeable for outputs), takes its data pointer and calls the kernel, releasing the GIL
when the call runs on several threads. It returns False without calling the kernel when an
argument fails a check, and the generated program then takes the ctypes path, which copies to
contiguous buffers first.

The module shares the library's cache entry; the headers' Python and NumPy versions are part of
the cache key (``abi``), so a library built for another interpreter is never loaded.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import BFLOAT16

# Below this many elements a group runs on the calling thread (GPUGRAPH_CPU_PARALLEL_MIN
# overrides it). Measured on the shared 2-core box (docs/cpu-backend.md, "Threads"): an OpenMP
# region costs microseconds when both cores are free, but under load the calling thread waits
# at the region's barrier for a worker the OS has not scheduled (milliseconds, spinning first),
# so groups of 1M-4M elements ran 2-70x slower on 2 threads than on 1 (bench/probe_cpu_threads.py,
# bench/results/cpu-threads-cpu-2026-12-01.md); only 16M-element passes, long enough to absorb
# a stall, gained from a second thread. A dedicated machine may want a much lower threshold.
PARALLEL_MIN_ENV = "GPUGRAPH_CPU_PARALLEL_MIN"
PARALLEL_MIN_ELEMENTS = 1 << 23
ENTRY_NAME = "gpugraph_cpu_module"  # extern "C": the module's name, read through ctypes
MODULE_FILE = "gpugraph_cpu_module.cpp"  # the module's #line file name, in compiler logs
_NPY_TYPES = {
    "float16": "NPY_FLOAT16",
    "float32": "NPY_FLOAT32",
    "float64": "NPY_FLOAT64",
    "int8": "NPY_INT8",
    "int16": "NPY_INT16",
    "int32": "NPY_INT32",
    "int64": "NPY_INT64",
    "uint8": "NPY_UINT8",
    "uint16": "NPY_UINT16",
    "bool": "NPY_BOOL",
    # no fixed NumPy type number (ml_dtypes registers one when it is imported): checked against
    # the number ``load`` gives the module
    "bfloat16": "__gg_py::TYPE_BFLOAT16",
}

MODULE_HEADER = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

namespace __gg_py {
struct Arg {
  int type;
  npy_intp size;
  bool out;
};
// bfloat16's type number is ml_dtypes' registration in this process, set through
// _gg_set_bfloat16 when the module is loaded; until then it matches no array (the ctypes path).
static const int TYPE_BFLOAT16 = -2;
static int bfloat16_type = -3;

// Check each argument against the kernel's spec and call it; False (no call) on a mismatch.
template <class... P>
PyObject* call(void (*kernel)(P...), PyObject* const* args, Py_ssize_t nargs, const Arg* spec,
               long long n) {
  constexpr Py_ssize_t N = sizeof...(P);
  if (nargs != N) {
    PyErr_Format(PyExc_TypeError, "gpugraph cpu kernel takes %zd arrays, got %zd", N, nargs);
    return NULL;
  }
  void* ptrs[N > 0 ? N : 1];
  for (Py_ssize_t j = 0; j < N; ++j) {
    if (!PyArray_Check(args[j])) Py_RETURN_FALSE;
    PyArrayObject* a = (PyArrayObject*)args[j];
    const int need =
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | (spec[j].out ? NPY_ARRAY_WRITEABLE : 0);
    const int type = spec[j].type == TYPE_BFLOAT16 ? bfloat16_type : spec[j].type;
    if ((PyArray_FLAGS(a) & need) != need || PyArray_TYPE(a) != type ||
        !PyArray_ISNOTSWAPPED(a) || PyArray_SIZE(a) != spec[j].size)
      Py_RETURN_FALSE;
    ptrs[j] = PyArray_DATA(a);
  }
  if (n == 0) Py_RETURN_TRUE;
  const long long threads = gpugraph_cpu_threads();
  long long chunk = n;
  if (n >= GG_PARALLEL_MIN && threads > 1)
    chunk = ((n + threads - 1) / threads + GG_CHUNK_ALIGN - 1) / GG_CHUNK_ALIGN * GG_CHUNK_ALIGN;
  if (chunk < n) {
    Py_BEGIN_ALLOW_THREADS __gg_cpu::run(kernel, ptrs, n, chunk);
    Py_END_ALLOW_THREADS
  } else {
    __gg_cpu::run(kernel, ptrs, n, chunk);
  }
  Py_RETURN_TRUE;
}
}  // namespace __gg_py
"""
KERNEL_ENTRY = """\
static const __gg_py::Arg gg_spec_{name}[] = {{{specs}}};
static PyObject* gg_py_{name}(PyObject*, PyObject* const* args, Py_ssize_t nargs) {{
  return __gg_py::call(&{name}, args, nargs, gg_spec_{name}, {n}LL);
}}
"""
METHOD = '  {{"{name}", (PyCFunction)(void (*)(void))gg_py_{name}, METH_FASTCALL, NULL}},\n'
MODULE_FOOTER = """\
static PyObject* gg_set_bfloat16(PyObject*, PyObject* num) {{
  const long value = PyLong_AsLong(num);
  if (value == -1 && PyErr_Occurred()) return NULL;
  __gg_py::bfloat16_type = (int)value;
  Py_RETURN_NONE;
}}
static PyMethodDef gg_methods[] = {{
{methods}  {{"_gg_set_bfloat16", gg_set_bfloat16, METH_O, NULL}},
  {{NULL, NULL, 0, NULL}}}};
static struct PyModuleDef gg_module = {{PyModuleDef_HEAD_INIT, "{module}", NULL, -1, gg_methods}};
extern "C" PyMODINIT_FUNC PyInit_{module}(void) {{
  import_array();
  return PyModule_Create(&gg_module);
}}
extern "C" const char* {entry}(void) {{ return "{module}"; }}
"""


@functools.lru_cache(maxsize=1)
def parallel_min() -> int:
    """Elements from which a group runs on every OpenMP thread (read once a process)."""
    raw = os.environ.get(PARALLEL_MIN_ENV, "").strip()
    if not raw:
        return PARALLEL_MIN_ELEMENTS
    try:
        value = int(raw)
    except ValueError:
        raise UnsupportedError(f"{PARALLEL_MIN_ENV}={raw!r}: use an element count") from None
    if value < 1:
        raise UnsupportedError(f"{PARALLEL_MIN_ENV}={raw!r}: use a count of at least 1")
    return value


@functools.lru_cache(maxsize=1)
def include_flags() -> tuple[str, ...] | None:
    """-I flags for Python.h and numpy/arrayobject.h, or None where either is missing (the
    backend then calls kernels through ctypes only)."""
    py = sysconfig.get_paths().get("include")
    npy = np.get_include()
    if not py or not (Path(py) / "Python.h").is_file():
        return None
    if not (Path(npy) / "numpy" / "arrayobject.h").is_file():
        return None
    return (f"-I{py}", f"-I{npy}")


def templates() -> str:
    """The module's source templates: part of every kernel's cache key, so that a library
    built by another version of this file is not found through the kernel index."""
    return MODULE_HEADER + KERNEL_ENTRY + METHOD + MODULE_FOOTER


def abi() -> str:
    """What a built module depends on besides its source: part of the cache key."""
    return (
        f"{sys.implementation.cache_tag} {sysconfig.get_config_var('SOABI')} numpy {np.__version__}"
    )


def module_source(module: str, kernels: list[Any], parallel_from: int, chunk_align: int) -> str:
    """The extension module ``module`` calling ``kernels`` (each with ``name``, ``n`` and
    ``args``: (dtype, element count, is output) per parameter)."""
    text = f"#define GG_PARALLEL_MIN {parallel_from}LL\n#define GG_CHUNK_ALIGN {chunk_align}LL\n"
    text += MODULE_HEADER
    for k in kernels:
        specs = ", ".join(
            f"{{{_NPY_TYPES[np.dtype(dt).name]}, {size}, {'true' if out else 'false'}}}"
            for dt, size, out in k.args
        )
        text += KERNEL_ENTRY.format(name=k.name, specs=specs, n=k.n)
    methods = "".join(METHOD.format(name=k.name) for k in kernels)
    return text + MODULE_FOOTER.format(methods=methods, module=module, entry=ENTRY_NAME)


_loaded: dict[str, ModuleType] = {}


def load(path: Path, lib: Any) -> ModuleType | None:
    """The extension module inside the kernel library at ``path`` (``lib``: its ctypes
    handle), or None for a library built without one."""
    try:
        entry = getattr(lib, ENTRY_NAME)
    except AttributeError:
        return None
    entry.restype, entry.argtypes = ctypes.c_char_p, []
    name = entry().decode()
    module = _loaded.get(name)
    if module is None:
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        if BFLOAT16 is not None and hasattr(module, "_gg_set_bfloat16"):
            module._gg_set_bfloat16(BFLOAT16.num)
        _loaded[name] = module
    return module
