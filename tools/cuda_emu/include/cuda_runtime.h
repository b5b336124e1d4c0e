// Stand-in for <cuda_runtime.h> in the CUDA emulator (see build.sh): the device built-ins
// (threadIdx, __syncthreads, warp intrinsics, atomics, a few math intrinsics) and the runtime
// calls the engine makes, with host memory as device memory and a single device.
// `__shared__` declarations are rewritten by transform.py into emu::shared_array, so that a
// block's shared memory lives in one buffer the checker poisons and watches (emu.cpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
constexpr int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __constant__ static
#define __align__(n) alignas(n)

// float2 and float4 copy through GCC vector types, so that the checker sees a vector load or
// store as one 8- or 16-byte access (as the GPU issues LDS.64/LDS.128, LDG.128, ...): a plain
// struct copy reaches -fsanitize=thread's hooks as 4-byte accesses, one per member. The
// vectors claim 4-byte alignment only, so that a misaligned address reaches the checker
// (which fails the launch, as the GPU would) instead of faulting in an aligned SSE move.
namespace emu {
typedef float vec2 __attribute__((vector_size(8), may_alias, aligned(4)));
typedef float vec4 __attribute__((vector_size(16), may_alias, aligned(4)));
}  // namespace emu
struct alignas(8) float2 {
  float x, y;
  float2() = default;
  float2(float x_, float y_) : x(x_), y(y_) {}
  float2(const float2& o) { *reinterpret_cast<emu::vec2*>(this) = *reinterpret_cast<const emu::vec2*>(&o); }
  float2& operator=(const float2& o) {
    *reinterpret_cast<emu::vec2*>(this) = *reinterpret_cast<const emu::vec2*>(&o);
    return *this;
  }
};
struct alignas(16) float4 {
  float x, y, z, w;
  float4() = default;
  float4(float x_, float y_, float z_, float w_) : x(x_), y(y_), z(z_), w(w_) {}
  float4(const float4& o) { *reinterpret_cast<emu::vec4*>(this) = *reinterpret_cast<const emu::vec4*>(&o); }
  float4& operator=(const float4& o) {
    *reinterpret_cast<emu::vec4*>(this) = *reinterpret_cast<const emu::vec4*>(&o);
    return *this;
  }
};
inline float2 make_float2(float x, float y) { return float2(x, y); }
inline float4 make_float4(float x, float y, float z, float w) { return float4(x, y, z, w); }

typedef enum {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719
} cudaError_t;
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
#define cudaStreamNonBlocking 1

namespace emu {
void launch(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body, const std::string& name);
void syncthreads();
void* shared_array(const void* tag, size_t bytes, size_t align, const char* name);
void* device_alloc(size_t bytes);
void device_free(void* p);
const char* error_string(cudaError_t e);
extern cudaError_t last_error;

// "name<a, b>" for a kernel template instantiated with integer arguments.
inline std::string kernel_name(const char* name, std::initializer_list<long long> args) {
  std::string s = name;
  const char* sep = "<";
  for (long long a : args) { s += sep; s += std::to_string(a); sep = ", "; }
  return args.size() ? s + ">" : s;
}

// A `__shared__ T name[...]` of the running block: the same address for all its threads.
// (At least 16-byte aligned, as a float4 access needs; more where the type or __align__ asks.)
template <typename T, size_t Align = 16> T& shared(const void* tag, const char* name) {
  constexpr size_t align = std::max<size_t>({alignof(T), Align, 16});
  return *static_cast<T*>(shared_array(tag, sizeof(T), align, name));
}

// Warp-synchronous exchange (emu.cpp): the calling thread waits until every lane of `mask`
// has called it with the same kind; then each gets its result.
enum class WarpOp { Sync, Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width);
template <typename T> uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp shuffles move up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T> T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// Atomics run in emu.cpp, outside the checker's view, so they never count as races.
int atomic_add_i(int* p, int v);
unsigned atomic_add_u(unsigned* p, unsigned v);
unsigned long long atomic_add_ull(unsigned long long* p, unsigned long long v);
float atomic_add_f(float* p, float v);
double atomic_add_d(double* p, double v);
int atomic_min_i(int* p, int v);
int atomic_max_i(int* p, int v);
int atomic_or_i(int* p, int v);
int atomic_exch_i(int* p, int v);
float atomic_exch_f(float* p, float v);
int atomic_cas_i(int* p, int compare, int v);
}  // namespace emu

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_op(emu::WarpOp::Sync, mask, 0, 0, 32); }
template <typename T> T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return emu::from_bits<T>(emu::warp_op(emu::WarpOp::Shfl, mask, emu::to_bits(v), src, width));
}
template <typename T> T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::from_bits<T>(emu::warp_op(emu::WarpOp::ShflUp, mask, emu::to_bits(v), int(delta), width));
}
template <typename T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return emu::from_bits<T>(emu::warp_op(emu::WarpOp::ShflDown, mask, emu::to_bits(v), int(delta), width));
}
template <typename T> T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
  return emu::from_bits<T>(emu::warp_op(emu::WarpOp::ShflXor, mask, emu::to_bits(v), laneMask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(emu::warp_op(emu::WarpOp::Ballot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return int(emu::warp_op(emu::WarpOp::Any, mask, pred != 0, 0, 32)); }
inline int __all_sync(unsigned mask, int pred) { return int(emu::warp_op(emu::WarpOp::All, mask, pred != 0, 0, 32)); }

inline cudaError_t cudaGetLastError() { cudaError_t e = emu::last_error; emu::last_error = cudaSuccess; return e; }
inline cudaError_t cudaPeekAtLastError() { return emu::last_error; }
inline const char* cudaGetErrorString(cudaError_t e) { return emu::error_string(e); }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t bytes) { *p = emu::device_alloc(bytes); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
inline cudaError_t cudaFree(void* p) { emu::device_free(p); return cudaSuccess; }
// Device memory is host memory: report none as unknown (the caller then does not check).
inline cudaError_t cudaMemGetInfo(size_t* free, size_t* total) { *free = *total = 0; return cudaErrorInvalidValue; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyPeerAsync(void* d, int, const void* s, int, size_t n, cudaStream_t = nullptr) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t = nullptr) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { *s = nullptr; return cudaSuccess; }
// Copies run at once, so pinned memory is plain memory and events are always complete.
typedef struct CUevent_st* cudaEvent_t;
#define cudaEventDisableTiming 2
inline cudaError_t cudaMallocHost(void** p, size_t bytes) { *p = std::malloc(bytes ? bytes : 1); return cudaSuccess; }
inline cudaError_t cudaFreeHost(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { *e = nullptr; return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = nullptr) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }

template <typename T> inline T __ldg(const T* p) { return *p; }
inline int atomicAdd(int* p, int v) { return emu::atomic_add_i(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return emu::atomic_add_u(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return emu::atomic_add_ull(p, v); }
inline float atomicAdd(float* p, float v) { return emu::atomic_add_f(p, v); }
inline double atomicAdd(double* p, double v) { return emu::atomic_add_d(p, v); }
inline int atomicMin(int* p, int v) { return emu::atomic_min_i(p, v); }
inline int atomicMax(int* p, int v) { return emu::atomic_max_i(p, v); }
inline int atomicOr(int* p, int v) { return emu::atomic_or_i(p, v); }
inline int atomicExch(int* p, int v) { return emu::atomic_exch_i(p, v); }
inline float atomicExch(float* p, float v) { return emu::atomic_exch_f(p, v); }
inline int atomicCAS(int* p, int compare, int v) { return emu::atomic_cas_i(p, compare, v); }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
using std::min;
using std::max;
