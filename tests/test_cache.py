"""The persistent kernel cache: hits and misses, corrupt entries rebuilt, concurrent writers,
clear, and the emulator and NVRTC results going through it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gpugraph import cache
from gpugraph.__main__ import main
from gpugraph.testing import emulator
from tests.kernel_helpers import requires_emulator, requires_nvrtc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "STATS", cache.CacheStats())
    return tmp_path / "cache"


def test_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("GPUGRAPH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "gpugraph"
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"


def test_keys_separate_their_parts():
    assert cache.digest("ab", "c") != cache.digest("a", "bc")
    assert cache.digest("g++ 12", "src") != cache.digest("g++ 13", "src")
    assert cache.digest("x") == cache.digest(b"x")


def test_miss_then_hit(cache_root):
    key = cache.digest("some source")
    assert cache.read("test", key) is None
    cache.write("test", key, b"payload")
    assert cache.read("test", key) == b"payload"
    assert (cache.STATS.hits, cache.STATS.misses) == (1, 1)
    builds = []

    def build(path: Path) -> None:
        builds.append(path)
        path.write_bytes(b"built")

    p1 = cache.file_entry("test", key, ".bin", build)
    p2 = cache.file_entry("test", key, ".bin", build)
    assert p1 == p2 and len(builds) == 1
    assert p1.read_bytes().startswith(b"built")  # the payload, then the checksum trailer


def test_failed_build_stores_nothing(cache_root):
    def build(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("compiler failed")

    with pytest.raises(RuntimeError):
        cache.file_entry("test", cache.digest("bad"), ".so", build)
    assert list((cache_root / "test").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_entry_is_detected_and_rebuilt(cache_root, damage):
    key = cache.digest("k")
    path = cache.write("test", key, bytes(range(256)) * 8)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    else:
        path.write_bytes(b"")
    assert cache.read("test", key) is None
    assert cache.STATS.corrupt == 1 and not path.exists()
    rebuilt = cache.file_entry("test", key, "", lambda p: p.write_bytes(b"fresh"))
    assert cache.read("test", key) == b"fresh" and rebuilt == path


WRITER = """
import sys, time
from gpugraph import cache
tag, key = sys.argv[1], sys.argv[2]
def build(path):
    with open(path, "wb") as f:  # slowly, so that the two writers overlap
        for k in range(40):
            f.write(tag.encode() * 2048)
            f.flush()
            time.sleep(0.002)
for _ in range(5):
    cache._publish("race", key, ".so", build)
"""


def test_concurrent_writers_leave_a_valid_entry(cache_root):
    key = cache.digest("shared")
    cmd = [sys.executable, "-c", textwrap.dedent(WRITER)]
    procs = [subprocess.Popen([*cmd, tag, key], cwd=ROOT, stderr=subprocess.PIPE) for tag in "AB"]
    seen = set()
    while any(p.poll() is None for p in procs):  # a reader meanwhile: whole entries or none
        path = cache.verified("race", key + ".so")
        if path is not None:
            seen.add(path.read_bytes()[:1])
        time.sleep(0.005)  # leave the CPU to the writers
    for p in procs:
        assert p.wait() == 0, p.stderr.read().decode()
    path = cache.verified("race", key + ".so")
    assert path is not None and cache.STATS.corrupt == 0
    body = path.read_bytes()[: -cache.TRAILER.size]
    assert body in (b"A" * 2048 * 40, b"B" * 2048 * 40)
    assert seen <= {b"A", b"B"}
    assert [f.name for f in (cache_root / "race").iterdir()] == [path.name]  # no temporaries


def test_info_and_clear_touch_only_cache_entries(cache_root, capsys):
    for k in range(3):
        cache.write("emu-so", cache.digest(str(k)), b"x" * 100)
    cache.write("nvrtc-ok", cache.digest("s"), b"ok")
    stranger = cache_root / "emu-so" / "notes.txt"
    stranger.write_text("not ours")
    info = cache.info()
    assert info.kinds["emu-so"][0] == 3 and info.kinds["nvrtc-ok"][0] == 1
    main(["cache", "info"])
    assert "emu-so" in capsys.readouterr().out
    main(["cache", "clear"])
    assert "removed 4 entries" in capsys.readouterr().out
    assert stranger.exists() and not (cache_root / "nvrtc-ok").exists()
    assert cache.info().kinds == {"emu-so": (0, 0)}


ADD_ONE = r"""
extern "C" __global__ void add_one(float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}
"""


@requires_emulator
def test_emulator_libraries_come_from_the_cache(cache_root, monkeypatch):
    monkeypatch.setattr(emulator, "_KERNELS", {})  # as in a new process
    x = np.zeros(8, np.float32)
    emulator.emulate_kernel(ADD_ONE, "add_one", 1, 8, [x, np.int32(8)])
    assert cache.STATS.by_kind["emu-so"] == [0, 1]
    monkeypatch.setattr(emulator, "_KERNELS", {})
    emulator.emulate_kernel(ADD_ONE, "add_one", 1, 8, [x, np.int32(8)])
    assert cache.STATS.by_kind["emu-so"] == [1, 1]  # found through its index entry
    np.testing.assert_array_equal(x, 2)
    # a new process finds the library corrupt: it rebuilds it instead of loading it (loading
    # a truncated .so can crash the process). Replace the file, never truncate it in place:
    # this process still has the old one mapped.
    (lib,) = (cache_root / "emu-so").iterdir()
    broken = lib.with_name("broken")
    broken.write_bytes(lib.read_bytes()[:4096])
    broken.replace(lib)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EMULATE_IN_A_NEW_PROCESS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3.0", "corrupt=1"]
    assert cache.verified("emu-so", lib.name) is not None


EMULATE_IN_A_NEW_PROCESS = f"""
import numpy as np
from gpugraph import cache
from gpugraph.testing import emulate_kernel
x = np.full(8, 2, np.float32)
emulate_kernel({ADD_ONE!r}, "add_one", 1, 8, [x, np.int32(8)])
print(x[0], f"corrupt={{cache.STATS.corrupt}}")
"""


@requires_emulator
def test_kernels_batched_once_are_found_one_by_one(cache_root, monkeypatch):
    monkeypatch.setattr(emulator, "_KERNELS", {})
    srcs = [(ADD_ONE.replace("add_one", f"add_{k}"), f"add_{k}") for k in range(3)]
    emulator.load_kernels(srcs)
    monkeypatch.setattr(emulator, "_KERNELS", {})
    emulator.load_kernels([srcs[2], srcs[0]])  # another batch: no compiler run
    assert cache.STATS.by_kind["emu-so"] == [2, 1]


@requires_nvrtc
def test_nvrtc_success_is_remembered_and_failure_is_not(cache_root):
    from gpugraph.testing import KernelCompileError, check_compiles

    archs = ("compute_80", "compute_90")
    assert check_compiles(ADD_ONE, "add_one.cu", archs) == 2
    assert check_compiles(ADD_ONE, "add_one.cu", archs) == 0
    assert check_compiles(ADD_ONE, "add_one.cu", ("compute_75",)) == 1  # another arch
    broken = ADD_ONE.replace("x[i] +=", "x[i] + =")
    for _ in range(2):
        with pytest.raises(KernelCompileError):
            check_compiles(broken, "broken.cu", archs)
