"""Where the hand-written CUDA sources (top-level ``kernels/``) are, installed or not."""

from __future__ import annotations

from pathlib import Path


def kernel_dir() -> Path:
    try:  # an installed wheel maps kernels/ to the package gpugraph.kernels
        import gpugraph.kernels as installed

        return Path(installed.__file__).resolve().parent
    except ImportError:  # a source checkout: kernels/ sits beside gpugraph/
        return Path(__file__).resolve().parent.parent / "kernels"


def kernel_source(name: str) -> str:
    path = kernel_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"hand-written kernel {name!r} not found in {kernel_dir()}")
    return path.read_text()


def kernel_names() -> list[str]:
    return sorted(p.name for p in kernel_dir().glob("*.cu"))
