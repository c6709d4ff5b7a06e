// Concatenation of up to 16 inputs along one axis, in one launch: the adjoint-free half of
// cupy.concatenate, without the table of input pointers that cupy.concatenate uploads from the
// host for more than 8 inputs (a host-to-device copy, which CUDA graph capture refuses). The
// pointers travel in the launch's parameters instead; more inputs take one launch per 16.
//
// Input k is read as [outer, width_k] (width_k: its extent along the axis times the extent of
// the axes after it) and lands in columns [start_k, start_k + width_k) of out, read as
// [outer, out_width], where start_k = start0 + the widths of the inputs before it. blockIdx.y
// picks the input; the x blocks stride over its elements, so reads are contiguous and writes
// are contiguous within each row. An input of width 0 (padding, or an empty array) does nothing.
template <typename T>
__device__ void concat_one(T* __restrict__ out, long long outer, long long out_width,
                           long long start, const T* __restrict__ src, long long width) {
  const long long total = outer * width;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long row = i / width;
    out[row * out_width + start + (i - row * width)] = src[i];
  }
}

#define GG_IN(T, k) const T* __restrict__ s##k, long long w##k
#define GG_CONCAT_PARAMS(T)                                                                \
  T *__restrict__ out, long long outer, long long out_width, long long start0, GG_IN(T, 0), \
      GG_IN(T, 1), GG_IN(T, 2), GG_IN(T, 3), GG_IN(T, 4), GG_IN(T, 5), GG_IN(T, 6),        \
      GG_IN(T, 7), GG_IN(T, 8), GG_IN(T, 9), GG_IN(T, 10), GG_IN(T, 11), GG_IN(T, 12),     \
      GG_IN(T, 13), GG_IN(T, 14), GG_IN(T, 15)
#define GG_CONCAT_BODY(T)                                                                    \
  const T* src[16] = {s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15}; \
  const long long width[16] = {w0, w1, w2, w3, w4, w5, w6, w7,                               \
                               w8, w9, w10, w11, w12, w13, w14, w15};                        \
  const unsigned k = blockIdx.y;                                                             \
  long long start = start0;                                                                  \
  for (unsigned j = 0; j < k; ++j) start += width[j];                                        \
  concat_one<T>(out, outer, out_width, start, src[k], width[k]);

// gpugraph's dtypes (gpugraph/ops/core.py): float32, float64, int32, int64, bool
// clang-format off
extern "C" __global__ void gg_concat_f32(GG_CONCAT_PARAMS(float)) { GG_CONCAT_BODY(float) }
extern "C" __global__ void gg_concat_f64(GG_CONCAT_PARAMS(double)) { GG_CONCAT_BODY(double) }
extern "C" __global__ void gg_concat_i32(GG_CONCAT_PARAMS(int)) { GG_CONCAT_BODY(int) }
extern "C" __global__ void gg_concat_i64(GG_CONCAT_PARAMS(long long)) { GG_CONCAT_BODY(long long) }
extern "C" __global__ void gg_concat_bool(GG_CONCAT_PARAMS(bool)) { GG_CONCAT_BODY(bool) }
// clang-format on
