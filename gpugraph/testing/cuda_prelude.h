// Prelude that lets CUDA C kernels compile as host C++ for gpugraph's kernel emulator.
// Kernels without block-level cooperation run every thread of a launch one after another on one
// host thread (launch). Kernels that use __shared__, __syncthreads or warp shuffles run each
// block's threads as coroutines (ucontext) that meet at barriers (launch_coop): deterministic,
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

enum ThreadState { RUNNABLE, AT_SYNCTHREADS, AT_SHUFFLE, EXITED };

struct Coop {
  unsigned nthreads = 0;
  unsigned current = 0;  // linear thread index of the running coroutine
  unsigned epoch = 0;    // number of __syncthreads passed by this block
  std::vector<ucontext_t> ctx;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<ThreadState> state;
  std::vector<int> site;         // source line of the barrier each thread waits at
  std::vector<unsigned> mask;    // the shuffle mask each thread waits with
  std::vector<uint64_t> slot;    // shuffle exchange: each thread's contribution
  ucontext_t scheduler;
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
  swapcontext(&c.ctx[c.current], &c.scheduler);
}

inline void syncthreads(int line) {
  need_coop("__syncthreads");
  wait_here(AT_SYNCTHREADS, line, 0);
}

// Shared-memory access tracking: one record per word.
struct WordState {
  bool written = false;
  int writer = -1;
  unsigned write_epoch = ~0u;
  int reader = -1;  // -2: read by several threads in reader_epoch
  unsigned reader_epoch = ~0u;
};

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
  WordState* s;
  const char* name;
  long long i;
  std::string where() const { return std::string("shared ") + name + "[" + std::to_string(i) + "]"; }
  T load() const {
    const Coop& c = *coop;
    if (!s->written) fail_here("read of " + where() + ", never written in this block");
    if (s->write_epoch == c.epoch && s->writer != (int)c.current)
      fail_here("race on " + where() + ": written by thread " + std::to_string(s->writer) +
                " and read by thread " + std::to_string(c.current) +
                " with no __syncthreads between");
    if (s->reader_epoch == c.epoch && s->reader != (int)c.current) s->reader = -2;
    else s->reader = (int)c.current;
    s->reader_epoch = c.epoch;
    return *p;
  }
  void store(T v) const {
    const Coop& c = *coop;
    if (s->write_epoch == c.epoch && s->writer != (int)c.current)
      fail_here("race on " + where() + ": written by threads " + std::to_string(s->writer) +
                " and " + std::to_string(c.current) + " with no __syncthreads between");
    if (s->reader_epoch == c.epoch && s->reader != (int)c.current)
      fail_here("race on " + where() + ": read by " +
                (s->reader == -2 ? std::string("several threads") :
                                   "thread " + std::to_string(s->reader)) +
                ", then written by thread " + std::to_string(c.current) +
                " with no __syncthreads between");
    s->written = true;
    s->writer = (int)c.current;
    s->write_epoch = c.epoch;
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
    return SharedRef<T>{&data[k], &words[k], name, k};
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
}  // returns to c.scheduler through uc_link

inline std::string lane_list(unsigned m) {
  std::string s;
  for (int l = 0; l < 32; ++l)
    if ((m >> l) & 1u) s += (s.empty() ? "" : ",") + std::to_string(l);
  return s;
}

// Releases every warp whose shuffle can complete; "" when some did or none waits, else why the
// waiting shuffle can never complete.
inline std::string release_shuffles(Coop& c, bool& released) {
  std::string problem;
  for (unsigned base = 0; base < c.nthreads; base += 32) {
    for (unsigned t = base; t < base + 32 && t < c.nthreads; ++t) {
      if (c.state[t] != AT_SHUFFLE) continue;
      const unsigned m = c.mask[t];
      const int line = c.site[t];
      std::string why;
      for (unsigned l = 0; l < 32 && why.empty(); ++l) {
        if (!((m >> l) & 1u)) continue;
        const unsigned u = base + l;
        if (u >= c.nthreads)
          why = "mask " + std::to_string(m) + " names lane " + std::to_string(l) +
                ", which this block does not have";
        else if (c.state[u] == EXITED)
          why = "lane " + std::to_string(l) + " of mask " + std::to_string(m) + " has exited";
        else if (c.state[u] == AT_SYNCTHREADS)
          why = "lane " + std::to_string(l) + " waits at __syncthreads (line " +
                std::to_string(c.site[u]) + ")";
        else if (c.state[u] == AT_SHUFFLE && (c.site[u] != line || c.mask[u] != m))
          why = "lane " + std::to_string(l) + " is at another shuffle (line " +
                std::to_string(c.site[u] < 0 ? -c.site[u] : c.site[u]) + ", mask " +
                std::to_string(c.mask[u]) + ")";
      }
      if (why.empty()) {
        for (unsigned l = 0; l < 32; ++l)
          if ((m >> l) & 1u) c.state[base + l] = RUNNABLE;
        released = true;
      } else if (problem.empty()) {
        problem = "shuffle at line " + std::to_string(line < 0 ? -line : line) + " by lane " +
                  std::to_string(t - base) + " of warp " + std::to_string(base / 32) +
                  " (mask lanes " + lane_list(m) + ") can never complete: " + why;
      }
      break;  // one shuffle per warp per round
    }
  }
  return released ? std::string() : problem;
}

inline void run_block(Coop& c) {
  c.epoch = 0;
  for (SharedBase* s : shared_arrays()) s->reset();
  for (unsigned t = 0; t < c.nthreads; ++t) {
    getcontext(&c.ctx[t]);
    c.ctx[t].uc_stack.ss_sp = c.stacks[t].get();
    c.ctx[t].uc_stack.ss_size = kStack;
    c.ctx[t].uc_link = &c.scheduler;
    makecontext(&c.ctx[t], coop_entry, 0);
    c.state[t] = RUNNABLE;
  }
  const dim3 bd = blockDim;
  for (;;) {
    bool ran = false;
    for (unsigned t = 0; t < c.nthreads; ++t) {
      if (c.state[t] != RUNNABLE) continue;
      c.current = t;
      threadIdx = uint3{t % bd.x, t / bd.x % bd.y, t / (bd.x * bd.y)};
      swapcontext(&c.scheduler, &c.ctx[t]);
      ran = true;
      if (c.failed) throw Failure{c.message};
    }
    if (ran) continue;
    bool released = false;
    const std::string problem = release_shuffles(c, released);
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
  c.ctx.resize(c.nthreads);
  c.state.assign(c.nthreads, RUNNABLE);
  c.site.assign(c.nthreads, 0);
  c.mask.assign(c.nthreads, 0);
  c.slot.assign(c.nthreads, 0);
  for (unsigned t = 0; t < c.nthreads; ++t) c.stacks.emplace_back(new char[kStack]);
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
