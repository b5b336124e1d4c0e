// Probe kernels for the emulator's checker and counters (tests/test_cuda_emu.py): each plants
// one fault, or none. Usage: probes NAME; prints "ok" or the launch's error, then results.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

constexpr int kThreads = 64;

__global__ void clean(float* out) {
  __shared__ float s[kThreads];
  s[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * kThreads + threadIdx.x] = s[(threadIdx.x + 1) % kThreads];
}

__global__ void missing_barrier(float* out) {
  __shared__ float s[kThreads];
  s[threadIdx.x] = float(threadIdx.x);
  out[blockIdx.x * kThreads + threadIdx.x] = s[(threadIdx.x + 1) % kThreads];
}

__global__ void divergent_barrier(float* out) {
  __shared__ float s[kThreads];
  s[threadIdx.x] = 1.f;
  if (threadIdx.x < 16) __syncthreads();
  out[blockIdx.x * kThreads + threadIdx.x] = 0.f;
}

__global__ void unwritten_shared(float* out) {
  __shared__ float s[kThreads];
  if (threadIdx.x % 2 == 0) s[threadIdx.x] = 1.f;
  __syncthreads();
  out[blockIdx.x * kThreads + threadIdx.x] = s[threadIdx.x];
}

__global__ void block_race(float* out) {
  if (threadIdx.x == 0) out[0] = float(blockIdx.x);
}

__global__ void atomic_sum(float* out) { atomicAdd(out, 1.f); }

__global__ void strided(float* out) { out[(blockIdx.x * kThreads + threadIdx.x) * 32] = 1.f; }

__global__ void coalesced(float* out) { out[blockIdx.x * kThreads + threadIdx.x] = 1.f; }

template <int Pitch>
__global__ void transpose_tile(float* out) {
  __shared__ float tile[32][Pitch];
  const int x = threadIdx.x % 32, y = threadIdx.x / 32;
  for (int r = y; r < 32; r += kThreads / 32) tile[x][r] = float(r * 32 + x);  // column writes
  __syncthreads();
  for (int r = y; r < 32; r += kThreads / 32) out[blockIdx.x * 1024 + r * 32 + x] = tile[r][x];
}

__global__ void warp_sum(const float* in, float* out, unsigned* ballots) {
  float v = in[blockIdx.x * kThreads + threadIdx.x];
  for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
  unsigned b = __ballot_sync(0xffffffffu, in[blockIdx.x * kThreads + threadIdx.x] > 0.f);
  int lane = threadIdx.x % 32;
  float xored = __shfl_xor_sync(0xffffffffu, float(lane), 1);
  float up = __shfl_up_sync(0xffffffffu, float(lane), 3);
  float bcast = __shfl_sync(0xffffffffu, float(lane), 5, 16);
  int all = __all_sync(0xffffffffu, lane < 32), any = __any_sync(0xffffffffu, lane == 7);
  __syncwarp();
  if (lane == 0) { out[blockIdx.x * 2 + threadIdx.x / 32] = v; ballots[blockIdx.x * 2 + threadIdx.x / 32] = b; }
  if (xored != float(lane ^ 1) || up != float(lane < 3 ? lane : lane - 3) || bcast != float(lane / 16 * 16 + 5) ||
      !all || !any)
    out[1000] = 1.f;  // a wrong lane result: out of the checked range, caught by the host
}

__global__ void divergent_shuffle(float* out) {
  float v = float(threadIdx.x);
  if (threadIdx.x % 32 < 16) v = __shfl_down_sync(0xffffffffu, v, 1);
  out[blockIdx.x * kThreads + threadIdx.x] = v;
}

// float4 rows: each thread stores and loads one float4 of shared memory (a quarter warp
// covers the 32 banks once), loads a float4 every lane of the warp shares (a broadcast) and a
// float2, and writes a float4 of device memory: one access each, no bank conflict.
__global__ void vector_rows(float* out) {
  __shared__ __align__(16) float s[kThreads * 4];
  float4* s4 = reinterpret_cast<float4*>(s);
  s4[threadIdx.x] = make_float4(1.f, 2.f, 3.f, float(threadIdx.x));
  __syncthreads();
  float4 v = s4[(threadIdx.x + 1) % kThreads];
  float4 b = s4[0];
  float2 h = reinterpret_cast<const float2*>(s)[threadIdx.x];
  reinterpret_cast<float4*>(out)[blockIdx.x * kThreads + threadIdx.x] = make_float4(v.x + b.w, v.y + h.x, v.z + h.y, v.w);
}

// float4 loads 32 bytes apart: lanes l and l + 4 of a quarter warp read the same 4 banks
// (2 wavefronts per phase where 1 would do).
__global__ void vector_conflict(float* out) {
  __shared__ __align__(16) float s[kThreads * 8];
  float4* s4 = reinterpret_cast<float4*>(s);
  s4[2 * threadIdx.x] = make_float4(1.f, 2.f, 3.f, 4.f);
  s4[2 * threadIdx.x + 1] = make_float4(5.f, 6.f, 7.f, 8.f);
  __syncthreads();
  float4 v = s4[2 * threadIdx.x];
  out[blockIdx.x * kThreads + threadIdx.x] = v.x + v.y + v.z + v.w;
}

// A float4 load 4 bytes past a 16-byte boundary (the GPU faults: misaligned address).
__global__ void vector_misaligned(float* out) {
  __shared__ __align__(16) float s[kThreads * 4 + 4];
  for (int i = threadIdx.x; i < kThreads * 4 + 4; i += kThreads) s[i] = 1.f;
  __syncthreads();
  float4 v = reinterpret_cast<const float4*>(s + 1)[threadIdx.x];
  out[blockIdx.x * kThreads + threadIdx.x] = v.x;
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const char* name = argv[1];
  const int blocks = 8;
  float* out = nullptr;
  float* in = nullptr;
  unsigned* ballots = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&out), blocks * 1024 * 32 * sizeof(float));
  cudaMalloc(reinterpret_cast<void**>(&in), blocks * kThreads * sizeof(float));
  cudaMalloc(reinterpret_cast<void**>(&ballots), blocks * 2 * sizeof(unsigned));
  std::vector<float> host(blocks * kThreads);
  for (size_t i = 0; i < host.size(); ++i) host[i] = float(int(i * 7919 % 13) - 6);
  cudaMemcpy(in, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemsetAsync(out, 0, blocks * 1024 * 32 * sizeof(float));
  std::string n = name;
  if (n == "clean") clean<<<blocks, kThreads>>>(out);
  else if (n == "missing_barrier") missing_barrier<<<blocks, kThreads>>>(out);
  else if (n == "divergent_barrier") divergent_barrier<<<blocks, kThreads>>>(out);
  else if (n == "unwritten_shared") unwritten_shared<<<blocks, kThreads>>>(out);
  else if (n == "block_race") block_race<<<blocks, kThreads>>>(out);
  else if (n == "atomic_sum") atomic_sum<<<blocks, kThreads>>>(out);
  else if (n == "strided") strided<<<blocks, kThreads>>>(out);
  else if (n == "coalesced") coalesced<<<blocks, kThreads>>>(out);
  else if (n == "bank_conflict") transpose_tile<32><<<blocks, kThreads>>>(out);
  else if (n == "padded") transpose_tile<33><<<blocks, kThreads>>>(out);
  else if (n == "warp_sum") warp_sum<<<blocks, kThreads>>>(in, out, ballots);
  else if (n == "divergent_shuffle") divergent_shuffle<<<blocks, kThreads>>>(out);
  else if (n == "vector_rows") vector_rows<<<blocks, kThreads>>>(out);
  else if (n == "vector_conflict") vector_conflict<<<blocks, kThreads>>>(out);
  else if (n == "vector_misaligned") vector_misaligned<<<blocks, kThreads>>>(out);
  else return 2;
  cudaError_t err = cudaGetLastError();
  std::printf("%s\n", err == cudaSuccess ? "ok" : cudaGetErrorString(err));
  std::vector<float> result(1024 * blocks);
  std::vector<unsigned> bits(blocks * 2);
  cudaMemcpy(result.data(), out, result.size() * sizeof(float), cudaMemcpyDeviceToHost);
  cudaMemcpy(bits.data(), ballots, bits.size() * sizeof(unsigned), cudaMemcpyDeviceToHost);
  if (n == "vector_rows") {  // block 0's outputs
    for (int i = 0; i < kThreads * 4; ++i) std::printf("%g%s", result[i], i + 1 < kThreads * 4 ? " " : "\n");
  }
  if (n == "warp_sum" || n == "atomic_sum") {
    for (int i = 0; i < blocks * 2; ++i) std::printf("%g %u\n", result[i], bits[i]);
    std::printf("lanes %s\n", result[1000] == 0.f ? "ok" : "wrong");
  }
  return 0;
}
