// Prelude that compiles gpugraph's generated CUDA kernels (codegen/cuda.py) as native host code
// for the CPU backend (backends/cpu_backend.py). Unlike the emulator's prelude
// (testing/cuda_prelude.h), which walks every GPU thread for proofs, this one makes a kernel a
// plain loop: the grid is one thread with index 0 (so a grid-stride loop has stride 1, a
// compile-time constant the compiler vectorizes), and each host thread runs the kernel over
// one contiguous range of the iteration space (GG_RANGE_LO/HI). Only what generated kernels use
// is defined; they use no shared memory, barriers or atomics.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <cmath>
#include <type_traits>
#include <utility>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GPUGRAPH_CPU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct gg_uint3 {
  unsigned int x, y, z;
};
static constexpr gg_uint3 threadIdx{0, 0, 0};
static constexpr gg_uint3 blockIdx{0, 0, 0};
static constexpr gg_uint3 blockDim{1, 1, 1};
static constexpr gg_uint3 gridDim{1, 1, 1};

namespace __gg_cpu {
// The range the calling host thread's kernel call covers; set by run() around each call.
static thread_local long long range_lo = 0, range_hi = 0;
}  // namespace __gg_cpu
#define GG_RANGE_LO(n) (__gg_cpu::range_lo)
#define GG_RANGE_HI(n) (__gg_cpu::range_hi)

// glibc's vector math library (libmvec) has SIMD versions of the transcendental functions,
// within 4 ulp and with IEEE special cases (NaN, +-inf, overflow) handled; GCC calls them from
// vectorized loops only for functions declared "simd", which glibc does under -ffast-math
// alone (and -ffast-math would break NaN and signed-zero semantics). Declaring them here lets
// the loops vectorize without it. The backend defines GG_CPU_MVEC (and links -lmvec) only
// where libmvec is found.
#if defined(GG_CPU_MVEC) && defined(__x86_64__) && defined(__GLIBC__)
#define GG_SIMD __attribute__((simd("notinbranch")))
extern "C" {
GG_SIMD float expf(float) noexcept;
GG_SIMD double exp(double) noexcept;
GG_SIMD float logf(float) noexcept;
GG_SIMD double log(double) noexcept;
GG_SIMD float sinf(float) noexcept;
GG_SIMD double sin(double) noexcept;
GG_SIMD float cosf(float) noexcept;
GG_SIMD double cos(double) noexcept;
GG_SIMD float powf(float, float) noexcept;
GG_SIMD double pow(double, double) noexcept;
#if __GLIBC_PREREQ(2, 35)
GG_SIMD float tanhf(float) noexcept;
GG_SIMD double tanh(double) noexcept;
GG_SIMD float erff(float) noexcept;
GG_SIMD double erf(double) noexcept;
#endif
}
#endif

// CUDA math that the host's <cmath> lacks (keep in step with testing/cuda_prelude.h; the CPU
// backend's tests run every op's template through this file).
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
  return a < b ? b : a;
}

namespace __gg_cpu {
template <class... P, size_t... I>
inline void call(void (*kernel)(P...), void* const* args, std::index_sequence<I...>) {
  kernel(static_cast<P>(args[I])...);  // every parameter of a generated kernel is a pointer
}

// Run ``kernel`` over [0, n) in chunks of ``chunk`` elements (a multiple of 64, so every
// chunk but the last starts on a vector boundary of an aligned array), one chunk per
// OpenMP iteration; a single chunk runs on the calling thread without entering a parallel
// region (an ``if(false)`` region still costs GOMP a team of one: ~0.4 us a call).
template <class... P>
void run(void (*kernel)(P...), void* const* args, long long n, long long chunk) {
  const long long chunks = chunk > 0 ? (n + chunk - 1) / chunk : 0;
  if (chunks <= 1) {
    range_lo = 0;
    range_hi = n;
    if (n > 0) call(kernel, args, std::index_sequence_for<P...>{});
    return;
  }
#pragma omp parallel for schedule(static)
  for (long long c = 0; c < chunks; ++c) {
    range_lo = c * chunk;
    range_hi = range_lo + chunk < n ? range_lo + chunk : n;
    call(kernel, args, std::index_sequence_for<P...>{});
  }
}
}  // namespace __gg_cpu

extern "C" int gpugraph_cpu_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
