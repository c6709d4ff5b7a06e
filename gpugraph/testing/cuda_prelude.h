// Prelude that lets CUDA C kernels compile as host C++ for gpugraph's kernel emulator.
// Kernels without block-level cooperation run every thread of a launch one after another on one
// host thread (launch). Kernels that use __shared__, __syncthreads or warp shuffles run each
// block's threads as coroutines (own stacks) that meet at barriers (launch_coop): deterministic,
// one host thread, and with every shared-memory access checked for races (see Shared below).
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <ucontext.h>

#include <cassert>
#include <cmath>
#include <string>
#include <type_traits>
#include <memory>
#include <utility>
#include <vector>

#define GPUGRAPH_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)

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
inline double __longlong_as_double(long long x) { double d; memcpy(&d, &x, 8); return d; }
inline long long __double_as_longlong(double x) { long long i; memcpy(&i, &x, 8); return i; }
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

// cuda_fp16.h's __half on the host: the 16 bits of an IEEE binary16, converted with
// round-to-nearest-even like the device's __float2half. emulator.py drops `#include
// <cuda_fp16.h>` lines, so the kernels' own include finds this instead.
namespace __gpugraph_emu {
inline unsigned short float_to_half_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const unsigned short sign = (unsigned short)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN, inf
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half (units of 2^-24), exact scaling
    float a;
    memcpy(&a, &ax, 4);
    return sign | (unsigned short)nearbyintf(a * 16777216.0f);  // ties to even
  }
  const uint32_t mant = ax & 0x7fffffu;
  uint32_t h = (((ax >> 23) - 112u) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h += 1;  // a carry bumps the exponent
  return (unsigned short)(sign | h);
}
inline float half_bits_to_float(unsigned short h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float f = ldexpf((float)m, -24);
    return sign ? -f : f;
  }
  const uint32_t x = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112u) << 23) | (m << 13));
  float f;
  memcpy(&f, &x, 4);
  return f;
}
}  // namespace __gpugraph_emu
struct __half {
  unsigned short __x;
  __half() = default;
  __half(float f) : __x(__gpugraph_emu::float_to_half_bits(f)) {}
  __half(double d) : __x(__gpugraph_emu::float_to_half_bits((float)d)) {}
  operator float() const { return __gpugraph_emu::half_bits_to_float(__x); }
};
// cuda_fp16.hpp's operators on two halves: computed in float and rounded once, which equals
// the IEEE half result for + - * / (float carries more than 2 * 11 + 2 bits). As on the
// device, a half mixed with a float (h * 2.0f) is ambiguous: both conversions apply.
#define GG_HALF_ARITH(op)                                                              \
  inline __half operator op(const __half& a, const __half& b) {                        \
    return __half((float)a op(float) b);                                               \
  }                                                                                    \
  inline __half& operator op##=(__half & a, const __half& b) { return a = a op b; }
GG_HALF_ARITH(+)
GG_HALF_ARITH(-)
GG_HALF_ARITH(*)
GG_HALF_ARITH(/)
#undef GG_HALF_ARITH
#define GG_HALF_CMP(op) \
  inline bool operator op(const __half& a, const __half& b) { return (float)a op(float) b; }
GG_HALF_CMP(==)
GG_HALF_CMP(!=)
GG_HALF_CMP(<)
GG_HALF_CMP(>)
GG_HALF_CMP(<=)
GG_HALF_CMP(>=)
#undef GG_HALF_CMP
inline __half operator-(const __half& a) {
  __half r;
  r.__x = (unsigned short)(a.__x ^ 0x8000u);
  return r;
}
inline __half operator+(const __half& a) { return a; }
inline float __half2float(__half h) { return (float)h; }
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __double2half(double d) { return __half((float)d); }
inline bool __hisnan(__half h) { return (h.__x & 0x7fffu) > 0x7c00u; }
inline bool __hisinf(__half h) { return (h.__x & 0x7fffu) == 0x7c00u; }

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
                     : std::is_floating_point<T>::value ||
                               std::is_same<T, __half>::value
                         ? "f"
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

// ---------------------------------------------------------------------------------------------
// Cooperative execution: __shared__, __syncthreads and warp shuffles.
//
// launch_coop runs one block at a time; its threads are coroutines on this host thread, resumed
// in thread order, each running until it finishes or waits at a barrier. A __syncthreads
// releases when every thread that has not exited waits at the same __syncthreads. A shuffle is
// a warp barrier over the lanes of its mask: every lane named in the mask must reach the same
// shuffle with the same mask, and a lane may only read from a lane in the mask; anything else
// (a lane that exited or waits elsewhere, a mask naming lanes the block does not have) is UB on
// a GPU and a KernelRuntimeError here.
//
// The Python side rewrites `__shared__ T name[N];` into a Shared<T, N> (emulator.py), whose
// every access is checked: the index against N, reads of words not written in this block, and
// races: two accesses to one word by different threads, at least one a write, with no
// __syncthreads between them (the barrier epoch tells). So a missing __syncthreads is reported
// even when the serial thread order happens to give the right numbers.
namespace __gpugraph_emu {
constexpr size_t kStack = 256 * 1024;  // per emulated thread; kernels keep little on it

// Switching between the scheduler and the emulated threads. On x86-64: a few instructions that
// push the callee-saved registers and swap stacks, with no system call (swapcontext also saves
// the signal mask: a system call per switch, which made cooperative launches ~10x slower).
// Elsewhere: ucontext.
#if defined(__x86_64__) && !defined(GPUGRAPH_EMU_UCONTEXT)
extern "C" void __gpugraph_emu_switch(void** save_sp, void* load_sp);
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl __gpugraph_emu_switch\n"
    ".hidden __gpugraph_emu_switch\n"
    ".type __gpugraph_emu_switch, @function\n"
    "__gpugraph_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size __gpugraph_emu_switch, .-__gpugraph_emu_switch\n");
struct Fiber {
  void* sp = nullptr;
};
inline void fiber_switch(Fiber& from, Fiber& to) { __gpugraph_emu_switch(&from.sp, to.sp); }
// A stack whose first switch "returns" into entry as if it had been called (rsp = 8 mod 16).
inline void fiber_start(Fiber& f, char* stack, size_t size, void (*entry)()) {
  uintptr_t* p = reinterpret_cast<uintptr_t*>((reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15));
  *--p = 0;  // entry's return address: it never returns
  *--p = reinterpret_cast<uintptr_t>(entry);
  for (int r = 0; r < 6; ++r) *--p = 0;  // rbp, rbx, r12..r15
  f.sp = p;
}
#else
struct Fiber {
  ucontext_t ctx;
};
inline void fiber_switch(Fiber& from, Fiber& to) { swapcontext(&from.ctx, &to.ctx); }
inline void fiber_start(Fiber& f, char* stack, size_t size, void (*entry)()) {
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = stack;
  f.ctx.uc_stack.ss_size = size;
  f.ctx.uc_link = nullptr;  // entry never returns
  makecontext(&f.ctx, entry, 0);
}
#endif

enum ThreadState { RUNNABLE, AT_SYNCTHREADS, AT_SHUFFLE, AT_SYNCWARP, EXITED };

// Shared-memory access tracking: one record per word (per byte for extern __shared__).
struct WordState {
  bool written = false;
  int writer = -1;
  unsigned write_epoch = ~0u;
  unsigned write_syncs = 0;  // the writer's warp's __syncwarp count at the write
  int reader = -1;           // -2: read by several threads in reader_epoch
  unsigned reader_epoch = ~0u;
  int reader_warp = -1;      // -2: readers in several warps
  unsigned reader_lanes = 0;
  // the smallest __syncwarp count at those reads: a write is checked against every reading
  // lane from there, so a race with a lane that read after a later __syncwarp can be missed
  // (never a false report)
  unsigned reader_syncs = 0;
};

struct Coop {
  unsigned nthreads = 0;
  unsigned current = 0;  // linear thread index of the running coroutine
  unsigned epoch = 0;    // number of __syncthreads passed by this block
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<ThreadState> state;
  std::vector<int> site;         // source line of the barrier each thread waits at
  std::vector<unsigned> mask;    // the shuffle / __syncwarp mask each thread waits with
  std::vector<uint64_t> slot;    // shuffle exchange: each thread's contribution
  // per warp, the masks of the __syncwarp()s it completed in this block epoch, in order
  std::vector<std::vector<unsigned>> warp_syncs;
  // extern __shared__: the bytes given at launch, and one access record per byte
  size_t dyn_bytes = 0;
  std::vector<unsigned char> dyn;
  std::vector<WordState> dyn_words;
  Fiber scheduler;
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  bool failed = false;
  std::string message;
};
static thread_local Coop* coop = nullptr;

[[noreturn]] inline void fail_here(const std::string& what) {
  throw Failure{what + " (blockIdx=" + std::to_string(blockIdx.x) + "," +
                std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) +
                " threadIdx=" + std::to_string(threadIdx.x) + "," + std::to_string(threadIdx.y) +
                "," + std::to_string(threadIdx.z) + ")"};
}

inline Coop& need_coop(const char* what) {
  if (coop == nullptr) fail_here(std::string(what) + " outside a cooperative launch");
  return *coop;
}

inline void wait_here(ThreadState s, int line, unsigned m) {
  Coop& c = *coop;
  c.state[c.current] = s;
  c.site[c.current] = line;
  c.mask[c.current] = m;
  fiber_switch(c.fibers[c.current], c.scheduler);
}

inline void syncthreads(int line) {
  need_coop("__syncthreads");
  wait_here(AT_SYNCTHREADS, line, 0);
}

inline void syncwarp(unsigned m, int line) {
  Coop& c = need_coop("__syncwarp");
  const unsigned lane = c.current % 32;
  if (!((m >> lane) & 1u))
    fail_here("__syncwarp at line " + std::to_string(line) + ": calling lane " +
              std::to_string(lane) + " is not in mask " + std::to_string(m));
  wait_here(AT_SYNCWARP, line, m);
}

// Whether thread `other`'s shared access, made when its warp had completed `syncs` __syncwarps
// in this epoch, is ordered before the running thread's access: same warp, and a __syncwarp
// naming both lanes completed since (the running thread passed it, so it came first).
inline bool warp_ordered(const Coop& c, int other, unsigned syncs) {
  const unsigned t = c.current;
  if (other < 0 || (unsigned)other / 32 != t / 32) return false;
  const std::vector<unsigned>& done = c.warp_syncs[t / 32];
  const unsigned both = (1u << (other % 32)) | (1u << (t % 32));
  for (size_t k = syncs; k < done.size(); ++k)
    if ((done[k] & both) == both) return true;
  return false;
}
// The end of a race report: which barrier was missing between `other` and the running thread.
inline std::string no_barrier(const Coop& c, int other) {
  return other >= 0 && (unsigned)other / 32 == c.current / 32
             ? " with no __syncthreads between (nor a __syncwarp naming both lanes)"
             : " with no __syncthreads between";
}
inline unsigned warp_sync_count(const Coop& c) {
  return (unsigned)c.warp_syncs[c.current / 32].size();
}

struct SharedBase;
inline std::vector<SharedBase*>& shared_arrays() {
  static thread_local std::vector<SharedBase*> all;
  return all;
}
struct SharedBase {
  virtual void reset() = 0;
};

template <class T> struct SharedRef {
  T* p;
  WordState* s;  // `words` records, one per word of *p
  int words;
  const char* name;
  long long i;
  std::string where() const { return std::string("shared ") + name + "[" + std::to_string(i) + "]"; }
  T load() const {
    const Coop& c = *coop;
    const int me = (int)c.current, warp = me / 32;
    const unsigned syncs = warp_sync_count(c);
    for (WordState* w = s; w != s + words; ++w) {
      if (!w->written) fail_here("read of " + where() + ", never written in this block");
      if (w->write_epoch == c.epoch && w->writer != me &&
          !warp_ordered(c, w->writer, w->write_syncs))
        fail_here("race on " + where() + ": written by thread " + std::to_string(w->writer) +
                  " and read by thread " + std::to_string(me) + no_barrier(c, w->writer));
      if (w->reader_epoch != c.epoch) {
        w->reader = me;
        w->reader_warp = warp;
        w->reader_lanes = 0;
        w->reader_syncs = syncs;
      } else {
        if (w->reader != me) w->reader = -2;
        if (w->reader_warp != warp) w->reader_warp = -2;
        if (syncs < w->reader_syncs) w->reader_syncs = syncs;
      }
      w->reader_lanes |= 1u << (me % 32);
      w->reader_epoch = c.epoch;
    }
    return *p;
  }
  // Whether a write by the running thread would race with this epoch's reads of *w.
  static bool write_races_reads(const Coop& c, const WordState* w) {
    const int me = (int)c.current;
    if (w->reader_epoch != c.epoch || w->reader == me) return false;
    if (w->reader_warp != me / 32) return true;  // another warp (or several) read it
    const unsigned others = w->reader_lanes & ~(1u << (me % 32));
    for (int l = 0; l < 32; ++l)
      if (((others >> l) & 1u) && !warp_ordered(c, me / 32 * 32 + l, w->reader_syncs))
        return true;
    return false;
  }
  void store(T v) const {
    const Coop& c = *coop;
    const int me = (int)c.current;
    for (WordState* w = s; w != s + words; ++w) {
      if (w->write_epoch == c.epoch && w->writer != me &&
          !warp_ordered(c, w->writer, w->write_syncs))
        fail_here("race on " + where() + ": written by threads " + std::to_string(w->writer) +
                  " and " + std::to_string(me) + no_barrier(c, w->writer));
      if (write_races_reads(c, w))
        fail_here("race on " + where() + ": read by " +
                  (w->reader == -2 ? std::string("several threads") :
                                     "thread " + std::to_string(w->reader)) +
                  ", then written by thread " + std::to_string(me) + no_barrier(c, w->reader));
      w->written = true;
      w->writer = me;
      w->write_epoch = c.epoch;
      w->write_syncs = warp_sync_count(c);
    }
    *p = v;
  }
  operator T() const { return load(); }
  const SharedRef& operator=(T v) const { store(v); return *this; }
  const SharedRef& operator=(const SharedRef& o) const { store(o.load()); return *this; }
  const SharedRef& operator+=(T v) const { store(load() + v); return *this; }
  const SharedRef& operator-=(T v) const { store(load() - v); return *this; }
  const SharedRef& operator*=(T v) const { store(load() * v); return *this; }
  const SharedRef& operator/=(T v) const { store(load() / v); return *this; }
};

template <class T, long long N> struct Shared : SharedBase {
  static_assert(N > 0, "__shared__ array size must be positive");
  const char* name;
  T data[N];
  WordState words[N];
  explicit Shared(const char* n) : name(n) {
    need_coop("__shared__");
    shared_arrays().push_back(this);
    reset();
  }
  // At every block start: garbage contents (NaN / -1) and no access history.
  void reset() override {
    memset(static_cast<void*>(data), 0xFF, sizeof data);
    for (auto& w : words) w = WordState{};
  }
  template <class I> SharedRef<T> operator[](I i) {
    const long long k = (long long)i;
    if (k < 0 || k >= N)
      fail_here(std::string("shared ") + name + " index " + std::to_string(k) +
                " out of bounds [0, " + std::to_string(N) + ")");
    return SharedRef<T>{&data[k], &words[k], 1, name, k};
  }
};

// `__shared__ T name;`: one checked word, read and written through the name.
template <class T> struct SharedScalar : Shared<T, 1> {
  using Shared<T, 1>::Shared;
  operator T() { return (*this)[0].load(); }
  SharedScalar& operator=(T v) {
    (*this)[0].store(v);
    return *this;
  }
  SharedScalar& operator+=(T v) { return *this = (T)*this + v; }
  SharedScalar& operator-=(T v) { return *this = (T)*this - v; }
  SharedScalar& operator*=(T v) { return *this = (T)*this * v; }
};

// `extern __shared__ T name[];`: a view of the block's dynamic shared memory, whose size the
// launch gives (shared_mem bytes); every extern array starts at its first byte, as on a GPU.
template <class T> struct DynShared {
  const char* name;
  explicit DynShared(const char* n) : name(n) {}
  template <class I> SharedRef<T> operator[](I i) const {
    Coop& c = need_coop("extern __shared__");
    const long long k = (long long)i, n = (long long)(c.dyn_bytes / sizeof(T));
    if (k < 0 || k >= n)
      fail_here(std::string("extern shared ") + name + " index " + std::to_string(k) +
                " out of bounds [0, " + std::to_string(n) + ") (" +
                std::to_string(c.dyn_bytes) + " bytes of dynamic shared memory at launch)");
    const size_t at = (size_t)k * sizeof(T);
    return SharedRef<T>{reinterpret_cast<T*>(c.dyn.data() + at), c.dyn_words.data() + at,
                        (int)sizeof(T), name, k};
  }
};

enum ShuffleKind { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR };

template <class T> T shuffle(ShuffleKind kind, unsigned m, T v, int arg, int width, int line) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  Coop& c = need_coop("warp shuffle");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    fail_here("shuffle width " + std::to_string(width) + " is not a power of two <= 32");
  const unsigned tid = c.current, lane = tid % 32, base = tid - lane;
  if (!((m >> lane) & 1u))
    fail_here("shuffle at line " + std::to_string(line) + ": calling lane " +
              std::to_string(lane) + " is not in mask " + std::to_string(m));
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  c.slot[tid] = bits;
  wait_here(AT_SHUFFLE, line, m);  // every lane of the mask has deposited its value
  const int seg = (int)lane / width * width, in = (int)lane - seg;
  int src = (int)lane;
  switch (kind) {
    case SHFL_IDX: src = seg + ((arg % width) + width) % width; break;
    case SHFL_UP: src = in - arg >= 0 ? (int)lane - arg : (int)lane; break;
    case SHFL_DOWN: src = in + arg < width ? (int)lane + arg : (int)lane; break;
    case SHFL_XOR: src = ((int)lane ^ arg) / width * width > seg ? (int)lane : ((int)lane ^ arg) & 31; break;
  }
  if (!((m >> src) & 1u))
    fail_here("shuffle at line " + std::to_string(line) + ": lane " + std::to_string(lane) +
              " reads lane " + std::to_string(src) + ", which is not in mask " +
              std::to_string(m) + " (undefined on a GPU)");
  T out;
  memcpy(&out, &c.slot[base + src], sizeof(T));
  wait_here(AT_SHUFFLE, -line, m);  // every lane has read before any slot is reused
  return out;
}

inline void coop_entry() {
  Coop& c = *coop;
  try {
    c.body(c.arg);
  } catch (const Failure& f) {
    c.failed = true;
    c.message = f.message;
  } catch (const std::exception& e) {
    c.failed = true;
    c.message = std::string("C++ exception in kernel: ") + e.what();
  }
  c.state[c.current] = EXITED;
  fiber_switch(c.fibers[c.current], c.scheduler);  // never resumed
}

inline std::string lane_list(unsigned m) {
  std::string s;
  for (int l = 0; l < 32; ++l)
    if ((m >> l) & 1u) s += (s.empty() ? "" : ",") + std::to_string(l);
  return s;
}

// Why the warp-level wait of thread t (a shuffle, or a __syncwarp) cannot complete now; "" when
// every lane of its mask is at the same one (a shuffle: same line and mask; __syncwarp: same
// mask, any line, and exited lanes count as arrived, as the CUDA guide says).
inline std::string warp_wait_problem(const Coop& c, unsigned t) {
  const unsigned base = t - t % 32, m = c.mask[t];
  const bool shfl = c.state[t] == AT_SHUFFLE;
  const int line = c.site[t];
  for (unsigned l = 0; l < 32; ++l) {
    if (!((m >> l) & 1u)) continue;
    const unsigned u = base + l;
    if (u >= c.nthreads)
      return "mask " + std::to_string(m) + " names lane " + std::to_string(l) +
             ", which this block does not have";
    if (c.state[u] == EXITED) {
      if (shfl) return "lane " + std::to_string(l) + " of mask " + std::to_string(m) + " has exited";
    } else if (c.state[u] == AT_SYNCTHREADS) {
      return "lane " + std::to_string(l) + " waits at __syncthreads (line " +
             std::to_string(c.site[u]) + ")";
    } else if (c.state[u] != c.state[t] || c.mask[u] != m || (shfl && c.site[u] != line)) {
      const int at = c.site[u] < 0 ? -c.site[u] : c.site[u];
      return "lane " + std::to_string(l) + " is at another " +
             (c.state[u] == AT_SHUFFLE ? "shuffle" : "__syncwarp") + " (line " +
             std::to_string(at) + ", mask " + std::to_string(c.mask[u]) + ")";
    }
  }
  return "";
}

// Releases every group of lanes whose shuffle or __syncwarp can complete; "" when some did or
// none waits, else why a waiting one can never complete.
inline std::string release_warps(Coop& c, bool& released) {
  std::string problem;
  for (unsigned t = 0; t < c.nthreads; ++t) {
    if (c.state[t] != AT_SHUFFLE && c.state[t] != AT_SYNCWARP) continue;
    const std::string why = warp_wait_problem(c, t);
    const unsigned base = t - t % 32, m = c.mask[t];
    if (why.empty()) {
      if (c.state[t] == AT_SYNCWARP) c.warp_syncs[base / 32].push_back(m);
      for (unsigned l = 0; l < 32; ++l)
        if (((m >> l) & 1u) && c.state[base + l] != EXITED) c.state[base + l] = RUNNABLE;
      released = true;
    } else if (problem.empty()) {
      const int line = c.site[t] < 0 ? -c.site[t] : c.site[t];
      problem = std::string(c.state[t] == AT_SHUFFLE ? "shuffle" : "__syncwarp") + " at line " +
                std::to_string(line) + " by lane " + std::to_string(t - base) + " of warp " +
                std::to_string(base / 32) + " (mask lanes " + lane_list(m) +
                ") can never complete: " + why;
    }
  }
  return released ? std::string() : problem;
}

inline void run_block(Coop& c) {
  c.epoch = 0;
  for (SharedBase* s : shared_arrays()) s->reset();
  for (auto& w : c.warp_syncs) w.clear();
  memset(c.dyn.data(), 0xFF, c.dyn.size());  // garbage, as in a fresh block
  for (auto& w : c.dyn_words) w = WordState{};
  for (unsigned t = 0; t < c.nthreads; ++t) {
    fiber_start(c.fibers[t], c.stacks[t].get(), kStack, coop_entry);
    c.state[t] = RUNNABLE;
  }
  const dim3 bd = blockDim;
  for (;;) {
    bool ran = false;
    for (unsigned t = 0; t < c.nthreads; ++t) {
      if (c.state[t] != RUNNABLE) continue;
      c.current = t;
      threadIdx = uint3{t % bd.x, t / bd.x % bd.y, t / (bd.x * bd.y)};
      fiber_switch(c.scheduler, c.fibers[t]);
      ran = true;
      if (c.failed) throw Failure{c.message};
    }
    if (ran) continue;
    bool released = false;
    const std::string problem = release_warps(c, released);
    if (released) continue;
    unsigned waiting = 0;
    int line = 0;
    for (unsigned t = 0; t < c.nthreads; ++t) {
      if (c.state[t] != AT_SYNCTHREADS) continue;
      if (waiting++ && c.site[t] != line)
        throw Failure{"threads wait at different __syncthreads (lines " + std::to_string(line) +
                      " and " + std::to_string(c.site[t]) + ") in block " +
                      std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                      std::to_string(blockIdx.z)};
      line = c.site[t];
    }
    if (!problem.empty()) throw Failure{problem};
    if (waiting == 0) return;  // every thread exited
    // Exited threads count as arrived, as on sm_70 and later.
    for (unsigned t = 0; t < c.nthreads; ++t)
      if (c.state[t] == AT_SYNCTHREADS) c.state[t] = RUNNABLE;
    ++c.epoch;
    for (auto& w : c.warp_syncs) w.clear();  // warp orderings matter within an epoch only
  }
}

template <class... P> struct CoopArgs {
  void (*kernel)(P...);
  void** args;
};
template <class... P> void coop_body(void* p) {
  auto* a = static_cast<CoopArgs<P...>*>(p);
  call(a->kernel, a->args, std::index_sequence_for<P...>{});
}

template <class... P>
int launch_coop(void (*kernel)(P...), const unsigned* dims, void** args, char* err,
                size_t errlen) {
  gridDim = dim3(dims[0], dims[1], dims[2]);
  blockDim = dim3(dims[3], dims[4], dims[5]);
  Coop c;
  c.nthreads = blockDim.x * blockDim.y * blockDim.z;
  c.fibers.resize(c.nthreads);
  c.state.assign(c.nthreads, RUNNABLE);
  c.site.assign(c.nthreads, 0);
  c.mask.assign(c.nthreads, 0);
  c.slot.assign(c.nthreads, 0);
  for (unsigned t = 0; t < c.nthreads; ++t) c.stacks.emplace_back(new char[kStack]);
  c.warp_syncs.resize((c.nthreads + 31) / 32);
  c.dyn_bytes = dims[6];
  c.dyn.assign(c.dyn_bytes, 0xFF);
  c.dyn_words.assign(c.dyn_bytes, WordState{});
  CoopArgs<P...> a{kernel, args};
  c.body = &coop_body<P...>;
  c.arg = &a;
  coop = &c;
  int rc = 0;
  try {
    for (unsigned bz = 0; bz < gridDim.z; ++bz)
      for (unsigned by = 0; by < gridDim.y; ++by)
        for (unsigned bx = 0; bx < gridDim.x; ++bx) {
          blockIdx = uint3{bx, by, bz};
          run_block(c);
        }
  } catch (const Failure& f) {
    snprintf(err, errlen, "%s", f.message.c_str());
    rc = 1;
  }
  coop = nullptr;
  return rc;
}
}  // namespace __gpugraph_emu

#define __syncthreads() __gpugraph_emu::syncthreads(__LINE__)
inline void __syncwarp(unsigned m = 0xffffffffu, int line = __builtin_LINE()) {
  __gpugraph_emu::syncwarp(m, line);
}
// __builtin_LINE() as a default argument is the caller's line: it names the shuffle site.
template <class T>
inline T __shfl_sync(unsigned m, T v, int lane, int w = 32, int line = __builtin_LINE()) {
  return __gpugraph_emu::shuffle(__gpugraph_emu::SHFL_IDX, m, v, lane, w, line);
}
template <class T>
inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32, int line = __builtin_LINE()) {
  return __gpugraph_emu::shuffle(__gpugraph_emu::SHFL_UP, m, v, (int)d, w, line);
}
template <class T>
inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32, int line = __builtin_LINE()) {
  return __gpugraph_emu::shuffle(__gpugraph_emu::SHFL_DOWN, m, v, (int)d, w, line);
}
template <class T>
inline T __shfl_xor_sync(unsigned m, T v, int lane_mask, int w = 32,
                         int line = __builtin_LINE()) {
  return __gpugraph_emu::shuffle(__gpugraph_emu::SHFL_XOR, m, v, lane_mask, w, line);
}
