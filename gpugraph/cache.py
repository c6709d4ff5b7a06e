"""The persistent kernel cache: compiled kernels and compile results, shared by every process.

Entries live under ``$GPUGRAPH_CACHE_DIR`` (default ``$XDG_CACHE_HOME/gpugraph``, else
``~/.cache/gpugraph``), one file per entry, in a folder per kind (``emu-so`` for the emulator's
shared libraries, ``nvrtc-ok`` for "this source compiled for that arch", ...). Keys are SHA-256
digests of everything the result depends on: the source, the compiler and its version, the flags
(``digest``).

Each file is the payload followed by a 48-byte trailer: a magic tag, the payload's length and its
SHA-256. Readers check the trailer before using an entry, so a truncated or corrupted file is a
miss (it is deleted and rebuilt), never a wrong kernel. The dynamic loader ignores bytes after
the segments of a shared library, so a ``.so`` entry is loaded straight from its cache file.

Writers build into a private temporary file in the same folder and ``os.replace`` it into place:
concurrent processes that build the same entry each publish a complete file, the last one wins,
and a reader sees either no entry or a whole one.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GpuGraphError

FORMAT = "1"  # part of every key: bump it when an entry's meaning changes
MAGIC = b"GGCACHE1"
TRAILER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 of the payload


class CacheError(GpuGraphError):
    """The kernel cache directory cannot be created or written."""


@dataclass
class CacheStats:
    """Counters for this process (tests and the sweeps' progress lines read them)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [hits, misses]

    def count(self, kind: str, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        self.by_kind.setdefault(kind, [0, 0])[0 if hit else 1] += 1


STATS = CacheStats()


def cache_dir() -> Path:
    """The cache's root folder (not created here)."""
    env = os.environ.get("GPUGRAPH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gpugraph"


def digest(*parts: str | bytes) -> str:
    """A key: the SHA-256 of ``parts`` (each length-prefixed, so no two lists collide)."""
    h = hashlib.sha256(FORMAT.encode())
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _folder(kind: str) -> Path:
    if not kind.replace("-", "").isalnum():
        raise ValueError(f"cache kind {kind!r} must be letters, digits and dashes")
    path = cache_dir() / kind
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"cannot create the kernel cache folder {path}: {exc}. Set GPUGRAPH_CACHE_DIR to a "
            "writable folder."
        ) from None
    return path


def entry_path(kind: str, key: str, suffix: str = "") -> Path:
    return _folder(kind) / f"{key}{suffix}"


def _open_entry(path: Path) -> tuple[bytes | None, int | None]:
    """(payload, inode) of the entry at ``path``: (None, None) when there is none, (None, inode)
    when the file is not a whole entry. One open, so a concurrent replace cannot mix files."""
    try:
        with open(path, "rb") as f:
            ino = os.fstat(f.fileno()).st_ino
            data = f.read()
    except FileNotFoundError:
        return None, None
    return _payload(data), ino


def _payload(data: bytes) -> bytes | None:
    if len(data) < TRAILER.size:
        return None
    magic, length, sha = TRAILER.unpack(data[-TRAILER.size :])
    body = data[: -TRAILER.size]
    if magic != MAGIC or length != len(body) or hashlib.sha256(body).digest() != sha:
        return None
    return body


def _seal(body: bytes) -> bytes:
    return TRAILER.pack(MAGIC, len(body), hashlib.sha256(body).digest())


def _drop_corrupt(path: Path, ino: int) -> None:
    STATS.corrupt += 1
    try:  # only the file that was read: a writer may have published a whole one since
        if os.stat(path).st_ino == ino:
            path.unlink()
    except FileNotFoundError:
        pass


def read(kind: str, key: str) -> bytes | None:
    """The payload stored under (kind, key), or None (missing or corrupt: then removed)."""
    path = entry_path(kind, key)
    body, ino = _open_entry(path)
    if body is None and ino is not None:
        _drop_corrupt(path, ino)
    STATS.count(kind, body is not None)
    return body


def write(kind: str, key: str, body: bytes) -> Path:
    """Store ``body`` under (kind, key) atomically."""
    return _publish(kind, key, "", lambda tmp: tmp.write_bytes(body))


def verified(kind: str, filename: str) -> Path | None:
    """The path of entry ``filename`` (key and suffix) if it is whole, else None (a corrupt
    file is removed)."""
    path = entry_path(kind, filename)
    body, ino = _open_entry(path)
    if body is None and ino is not None:
        _drop_corrupt(path, ino)
    STATS.count(kind, body is not None)
    return path if body is not None else None


def file_entry(kind: str, key: str, suffix: str, build: Callable[[Path], None]) -> Path:
    """The path of a verified file entry, built first if missing or corrupt. ``build(path)``
    writes the file (e.g. a compiler's ``-o path``); it may raise, and then nothing is stored."""
    return verified(kind, key + suffix) or _publish(kind, key, suffix, build)


def _publish(kind: str, key: str, suffix: str, build: Callable[[Path], None]) -> Path:
    folder = _folder(kind)
    fd, name = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        build(tmp)
        body = tmp.read_bytes()
        with open(tmp, "ab") as f:
            f.write(_seal(body))
        path = folder / f"{key}{suffix}"
        os.replace(tmp, path)  # atomic: readers see the old entry, none, or this whole one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    kinds: dict[str, tuple[int, int]]  # kind -> (entries, bytes)

    def __str__(self) -> str:
        lines = [f"kernel cache: {self.path}"]
        if not self.kinds:
            lines.append("  (empty)")
        for kind, (n, size) in sorted(self.kinds.items()):
            lines.append(f"  {kind:<12} {n:>6} entries {size / 2**20:>9.1f} MiB")
        total = sum(size for _, size in self.kinds.values())
        lines.append(f"  total {total / 2**20:.1f} MiB")
        return "\n".join(lines)


def _entries(folder: Path) -> list[Path]:
    """The files of one kind's folder that this module wrote: entries and stray temporaries
    (nothing else is listed or removed, whatever GPUGRAPH_CACHE_DIR points at)."""
    return [f for f in folder.iterdir() if f.is_file() and _ENTRY.fullmatch(f.name)]


_ENTRY = re.compile(r"[0-9a-f]{64}(\.\w+)?|\.[0-9a-f]{16}\..*\.tmp(\.\w+)?")


def _kind_folders() -> list[Path]:
    root = cache_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.replace("-", "").isalnum())


def info() -> CacheInfo:
    kinds = {}
    for folder in _kind_folders():
        files = [f for f in _entries(folder) if not f.name.startswith(".")]
        kinds[folder.name] = (len(files), sum(f.stat().st_size for f in files))
    return CacheInfo(cache_dir(), kinds)


def clear() -> int:
    """Remove every entry (and stray temporary files); the number of entries removed."""
    removed = 0
    for folder in _kind_folders():
        for f in _entries(folder):
            removed += not f.name.startswith(".")
            f.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty: files this module did not write, or a writer at work
    return removed
