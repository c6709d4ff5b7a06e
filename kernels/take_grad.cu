// Scatter-add of a gathered gradient back to its source axis: the adjoint of take().
// g is read as [outer, n_idx, inner] and out as [outer, dim, inner]; out must be zeroed first.
// Several indices may name the same row, so the accumulation is atomic. The launcher passes rows
// already resolved under take's mode (gpugraph/ops/index.py: take_rows), so every index is in
// [0, dim); one that is not (a caller that skipped take_rows) is dropped, never wrapped onto
// another row and never written outside ``out``.
template <typename T>
__device__ void take_grad(const T* __restrict__ g, const long long* __restrict__ idx,
                          T* __restrict__ out, long long outer, long long n_idx, long long inner,
                          long long dim) {
  if (dim <= 0) return;  // an empty axis: nothing can be indexed
  const long long total = outer * n_idx * inner;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long k = i % inner;
    const long long j = (i / inner) % n_idx;
    const long long o = i / (inner * n_idx);
    const long long row = idx[j];
    if (row < 0 || row >= dim) continue;
    atomicAdd(&out[(o * dim + row) * inner + k], g[i]);
  }
}

extern "C" __global__ void gg_take_grad_f32(const float* __restrict__ g,
                                            const long long* __restrict__ idx,
                                            float* __restrict__ out, long long outer,
                                            long long n_idx, long long inner, long long dim) {
  take_grad<float>(g, idx, out, outer, n_idx, inner, dim);
}

extern "C" __global__ void gg_take_grad_f64(const double* __restrict__ g,
                                            const long long* __restrict__ idx,
                                            double* __restrict__ out, long long outer,
                                            long long n_idx, long long inner, long long dim) {
  take_grad<double>(g, idx, out, outer, n_idx, inner, dim);
}
