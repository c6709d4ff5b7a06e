"""Hand-written CUDA C sources, shipped as package data (installed as gpugraph.kernels)."""
