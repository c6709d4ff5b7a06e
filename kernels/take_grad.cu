// Scatter-add of a gathered gradient back to its source axis: the adjoint of take().
// g is read as [outer, n_idx, inner] and out as [outer, dim, inner]; out must be zeroed first.
// Several indices may name the same row, so the accumulation is atomic.
template <typename T>
__device__ void take_grad(const T* __restrict__ g, const long long* __restrict__ idx,
                          T* __restrict__ out, long long outer, long long n_idx, long long inner,
                          long long dim) {
  if (dim <= 0) return;  // nothing can be indexed (and % 0 is undefined)
  const long long total = outer * n_idx * inner;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long k = i % inner;
    const long long j = (i / inner) % n_idx;
    const long long o = i / (inner * n_idx);
    // wrapped like cupy.take (the forward on the GPU): any index lands inside [0, dim), so a
    // bad index can never make the atomic write outside ``out``
    long long row = idx[j] % dim;
    if (row < 0) row += dim;
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
