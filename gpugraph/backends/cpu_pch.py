"""A precompiled prelude for the cpu backend's compiles.

Of a one-kernel library's ~1 s compile, about 0.5-0.65 s is parsing the prelude and the Python
and NumPy headers of the extension entry point (cpu_native). Those are the same text in every
library, so they go into one header that every compile includes (``-include``), precompiled
once per cache and toolchain: the compiler then loads ``<header>.gch`` instead of parsing.

Where the ``.gch`` is missing, stale (other flags, another compiler) or could not be built, GCC
reads the header's text instead, silently: the same program either way, so a library's cache
key (cpu_backend, the whole text) does not depend on whether the PCH was used.

The header and its ``.gch`` live in the persistent kernel cache under the kind ``cpu-pch``,
named by a digest of the toolchain, the flags and the header text, and are written to a
temporary file and renamed into place (safe under concurrent processes). They carry no
checksum of their own: GCC checks a ``.gch``'s compiler version and flags before it uses one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .. import cache

KIND = "cpu-pch"
# The entry point's includes (cpu_native.MODULE_HEADER defines the same macros again before
# its own includes, which then find their include guards set: identical redefinitions).
# The #line makes a failure in Python's or NumPy's headers name the module's file, which is
# how cpu_backend._build knows to retry without the entry point.
PY_INCLUDES = (
    '#line 1 "gpugraph_cpu_module.cpp"\n'
    "#define PY_SSIZE_T_CLEAN\n#include <Python.h>\n"
    "#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION\n#include <numpy/arrayobject.h>\n"
)
_lock = threading.Lock()
_started: dict[Path, threading.Thread] = {}  # headers whose .gch this process built or tried


def header_text(prelude: str, with_module: bool) -> str:
    """What the header holds: the prelude, and the extension module's includes."""
    text = f'#line 1 "cpu_prelude.h"\n{prelude}\n'
    return text + (PY_INCLUDES if with_module else "")


def header(
    compiler: str, flags: tuple[str, ...], toolchain: str, prelude: str, with_module: bool
) -> Path | None:
    """The header to ``-include`` once its ``.gch`` is built, else None: the caller compiles
    the prelude inline. The first compile that finds no ``.gch`` starts building it on a
    thread, beside its own compile, so the first library is not delayed by it (measured: a
    precompile before it made a cold plan's first compile 1.7-2.6 s instead of 0.85 s).
    ``flags``: the library compile's own flags (-I included), which a ``.gch`` must match."""
    text = header_text(prelude, with_module)
    key = cache.digest(KIND, toolchain, " ".join(flags), text)
    path = cache.entry_path(KIND, key)
    gch = path.with_name(path.name + ".gch")
    if path.is_file() and gch.is_file():
        return path
    with _lock:
        if path not in _started:
            _started[path] = thread = threading.Thread(
                target=_build, args=(compiler, flags, text, path, gch), name="gpugraph-pch"
            )
            # not a daemon: a process that exits during the build finishes it for the next one
            thread.start()
    return None


def wait() -> None:
    """Wait for the precompiles this process started (tests, benchmarks)."""
    with _lock:
        threads = list(_started.values())
    for t in threads:
        t.join()


def _build(compiler: str, flags: tuple[str, ...], text: str, path: Path, gch: Path) -> None:
    if not path.is_file():
        _atomic(path, lambda tmp: tmp.write_text(text))
    if path.is_file() and not gch.is_file():
        _atomic(gch, lambda tmp: _precompile(compiler, flags, path, tmp))


def _precompile(compiler: str, flags: tuple[str, ...], path: Path, out: Path) -> None:
    pch_flags = [f for f in flags if f != "-shared"]
    # at the lowest priority: on a busy machine it yields the cores to the compile it runs beside
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    proc = subprocess.run(
        [*nice, compiler, *pch_flags, "-x", "c++-header", str(path), "-o", str(out)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        # only speed is lost: the compile reads the header's text (and reports any error)
        raise OSError(proc.stderr.decode(errors="replace")[:2000])


def _atomic(path: Path, write) -> None:
    """Write ``path`` through a temporary file renamed into place; a failure leaves nothing."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:16]}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
