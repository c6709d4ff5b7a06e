// Prelude that lets CUDA C kernels compile as host C++ for gpugraph's kernel emulator.
// The emulator runs every thread of a launch one after another on one host thread, so anything
// that needs threads to run concurrently (__syncthreads, shared memory, warp shuffles) is
// rejected at compile time instead of silently giving wrong answers.
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cassert>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#define GPUGRAPH_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ __gpugraph_emulator_does_not_support_shared_memory__
#define __syncthreads()                                                                      \
  static_assert(false, "the gpugraph emulator runs threads one after another and does not " \
                       "support __syncthreads")

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

// thread_local so that two Python threads emulating launches of the same library do not race.
static thread_local uint3 threadIdx;
static thread_local uint3 blockIdx;
static thread_local dim3 blockDim;
static thread_local dim3 gridDim;
static const int warpSize = 32;

namespace __gpugraph_emu {
struct Failure {
  std::string message;
};
[[noreturn]] inline void fail(const std::string& what, const char* file, int line) {
  throw Failure{what + " at " + file + ":" + std::to_string(line) + " (blockIdx=" +
                std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                std::to_string(blockIdx.z) + " threadIdx=" + std::to_string(threadIdx.x) + "," +
                std::to_string(threadIdx.y) + "," + std::to_string(threadIdx.z) + ")"};
}
}  // namespace __gpugraph_emu

// Generated kernels reach vector accesses through GG_VECTOR_PTR (codegen/cuda.py). A GPU
// faults on a misaligned vector access where the host would not: check it here.
namespace __gpugraph_emu {
template <class T> T* vector_ptr(T* p, const char* file, int line) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0)
    fail("misaligned vector access: address " + std::to_string(reinterpret_cast<uintptr_t>(p)) +
             " is not a multiple of " + std::to_string(alignof(T)),
         file, line);
  return p;
}
}  // namespace __gpugraph_emu
#define GG_VECTOR_PTR(p, ...) \
  (__gpugraph_emu::vector_ptr(reinterpret_cast<__VA_ARGS__*>(p), __FILE__, __LINE__))

// A host assert() would abort the whole Python process; report it as a kernel failure instead.
#undef assert
#define assert(cond) \
  ((cond) ? (void)0 : __gpugraph_emu::fail("assertion failed: " #cond, __FILE__, __LINE__))
#define __trap() __gpugraph_emu::fail("__trap() called", __FILE__, __LINE__)

// Math that CUDA provides but host libm does not (float/double overloads like exp(float) and
// expf, logf, sqrtf, tanhf, erff, fabsf, powf, fmaxf, ... come from <math.h>/<cmath>).
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
template <class T> inline T __ldg(const T* p) { return *p; }

// CUDA's global min/max accept mixed operand types with the usual arithmetic conversions.
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
  return a < b ? b : a;
}

// Threads run one at a time, so plain read-modify-write is an exact model of the atomics.
template <class T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T> inline T atomicMax(T* p, T v) { T old = *p; *p = max(old, v); return old; }
template <class T> inline T atomicMin(T* p, T v) { T old = *p; *p = min(old, v); return old; }
template <class T> inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> inline T atomicCAS(T* p, T cmp, T v) {
  T old = *p;
  if (old == cmp) *p = v;
  return old;
}

namespace __gpugraph_emu {
// One token per kernel parameter: S (scalar) or P (pointer), then the (pointee) kind
// f/i/u/b/v/? and its size in bytes, then 'c' for a pointer to const. Python checks args with it.
template <class T> std::string scalar_token() {
  if (std::is_void<T>::value) return "v0";
  const char* kind = std::is_same<T, bool>::value           ? "b"
                     : std::is_floating_point<T>::value     ? "f"
                     : std::is_signed<T>::value             ? "i"
                     : std::is_integral<T>::value           ? "u"
                                                            : "?";
  return kind + std::to_string(sizeof(typename std::conditional<std::is_void<T>::value, char,
                                                                T>::type));
}
template <class T> std::string token() {
  if (std::is_pointer<T>::value) {
    using E = typename std::remove_pointer<T>::type;
    return "P" + scalar_token<typename std::remove_cv<E>::type>() +
           (std::is_const<E>::value ? "c" : "");
  }
  return "S" + scalar_token<T>();
}
template <class... P> const char* signature(void (*)(P...)) {
  static const std::string sig = [] {
    std::string s;
    ((s += token<P>() + " "), ...);
    return s;
  }();
  return sig.c_str();
}

template <class... P, size_t... I>
void call(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<P*>(args[I])...);
}

// dims = grid x,y,z then block x,y,z. Returns 0, or 1 with a message in err.
template <class... P>
int launch(void (*kernel)(P...), const unsigned* dims, void** args, char* err, size_t errlen) {
  gridDim = dim3(dims[0], dims[1], dims[2]);
  blockDim = dim3(dims[3], dims[4], dims[5]);
  try {
    for (unsigned bz = 0; bz < gridDim.z; ++bz)
      for (unsigned by = 0; by < gridDim.y; ++by)
        for (unsigned bx = 0; bx < gridDim.x; ++bx) {
          blockIdx = uint3{bx, by, bz};
          for (unsigned tz = 0; tz < blockDim.z; ++tz)
            for (unsigned ty = 0; ty < blockDim.y; ++ty)
              for (unsigned tx = 0; tx < blockDim.x; ++tx) {
                threadIdx = uint3{tx, ty, tz};
                call(kernel, args, std::index_sequence_for<P...>{});
              }
        }
  } catch (const Failure& f) {
    snprintf(err, errlen, "%s", f.message.c_str());
    return 1;
  } catch (const std::exception& e) {
    snprintf(err, errlen, "C++ exception in kernel: %s", e.what());
    return 1;
  }
  return 0;
}
}  // namespace __gpugraph_emu
