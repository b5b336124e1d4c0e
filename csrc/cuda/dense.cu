// Dense and element-wise routines on the GPU.
//   gemm:       C = sT * C + sO * op(A) op(B), row-major, op(X) = X or X^T.
//   addBias:    targets (R, numel / R) += bias[r];  biasGrad: targets[r] = sum of row r of grads.
//   add, mult, eltwiseMax, eltwiseMaxGrad, dropoutMask, momentumUpdate: element-wise.
//   copyColumns: targets[:, t0 + j] = sT * targets[:, t0 + j] + src[:, s0 + j], j < count;  flagNonFinite: flags[index] = 1
//     when some element of t is NaN or Inf (every finding thread stores 1 atomically: several
//     blocks may find one, and plain stores from several blocks to one word are a race).
// Layout: every tensor is its row-major matrix view (rows = all dims but the last).
// Launch:
//   gemm: 16x16 threads per block, each computing a 4x4 block of C, so a block owns a
//     64x64 tile of C; op(A) and op(B) are staged through shared memory in chunks of 16 along
//     the inner dimension, loaded in the order that makes global reads coalesced for each
//     transposition. Grid (ceil(N / 64), ceil(M / 64), splits); partial tiles are guarded.
//     With few tiles and a long K, K is split (grid z) into ranges whose products go to a
//     workspace and are added in split order (sum_chunks): deterministic.
//   biasGrad: one block of kThreads per row; each thread sums a fixed stride of the row and
//     the block adds the partial sums in a fixed tree, so the result is deterministic.
//   element-wise: kThreads per block, grid-stride loop, 64-bit indices.
// Preconditions (checked by ops::): shapes agree, one device, contiguous; the element-wise
// routines may alias their inputs and targets. Checked here: gemm's grid limit (M < 4M rows).
#include <algorithm>

#include "core/philox.h"
#include "cuda/kernel_util.cuh"
#include "ops/dense.h"

namespace ccn::cuda {
namespace {

constexpr int kGemmTile = 64;      // C tile per block (square)
constexpr int kGemmChunk = 16;     // inner-dimension chunk staged in shared memory
constexpr int kGemmThreads = 16;   // threads per block side; each computes 4x4 outputs
constexpr int kGemmPerThread = kGemmTile / kGemmThreads;
constexpr int kGemmTargetBlocks = 256;  // split K until about this many blocks run...
constexpr int kGemmMinSplitK = 512;     // ...as long as each split keeps this much of K

// Three resident blocks (at most 85 registers a thread): without the hint some ptxas versions
// (13.5) settle on 64 registers and spill; with it every version fits without spilling.
__global__ void __launch_bounds__(kGemmThreads * kGemmThreads, 3)
gemm_kernel(const float* a, const float* b, float* c, float* partials, int M, int N, int K, int kPerSplit,
            bool transA, bool transB, float sT, float sO) {
  // Column-major tiles of op(A) and op(B) along the inner dimension. A transposing store puts
  // lanes (k, m) = (lane % 16, m0 + lane / 16) at word k * kGemmPitch + m: with a pitch of
  // 2 * odd (66) the 32 lanes fall in 32 distinct banks (a pitch of 65 gives a 2-way conflict).
  constexpr int kGemmPitch = kGemmTile + 2;
  __shared__ float tileA[kGemmChunk][kGemmPitch];
  __shared__ float tileB[kGemmChunk][kGemmPitch];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kGemmThreads + tx;
  const int m0 = blockIdx.y * kGemmTile, n0 = blockIdx.x * kGemmTile;
  const int lda = transA ? M : K, ldb = transB ? K : N;
  const int kBegin = blockIdx.z * kPerSplit, kEnd = min(K, kBegin + kPerSplit);

  float acc[kGemmPerThread][kGemmPerThread] = {};
  for (int k0 = kBegin; k0 < kEnd; k0 += kGemmChunk) {
    constexpr int kLoads = kGemmChunk * kGemmTile / (kGemmThreads * kGemmThreads);
#pragma unroll
    for (int r = 0; r < kLoads; ++r) {
      int e = tid + r * kGemmThreads * kGemmThreads;
      // Consecutive threads walk the dimension that is contiguous in memory.
      int m = transA ? e % kGemmTile : e / kGemmChunk, ka = transA ? e / kGemmTile : e % kGemmChunk;
      int gm = m0 + m, gk = k0 + ka;
      tileA[ka][m] = gm < M && gk < kEnd ? a[transA ? int64_t(gk) * lda + gm : int64_t(gm) * lda + gk] : 0.f;
      int n = transB ? e / kGemmChunk : e % kGemmTile, kb = transB ? e % kGemmChunk : e / kGemmTile;
      int gn = n0 + n, gkb = k0 + kb;
      tileB[kb][n] = gn < N && gkb < kEnd ? b[transB ? int64_t(gn) * ldb + gkb : int64_t(gkb) * ldb + gn] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kGemmChunk; ++k) {
      float av[kGemmPerThread], bv[kGemmPerThread];
#pragma unroll
      for (int i = 0; i < kGemmPerThread; ++i) av[i] = tileA[k][ty + i * kGemmThreads];
#pragma unroll
      for (int j = 0; j < kGemmPerThread; ++j) bv[j] = tileB[k][tx + j * kGemmThreads];
#pragma unroll
      for (int i = 0; i < kGemmPerThread; ++i)
#pragma unroll
        for (int j = 0; j < kGemmPerThread; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kGemmPerThread; ++i) {
    int m = m0 + ty + i * kGemmThreads;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < kGemmPerThread; ++j) {
      int n = n0 + tx + j * kGemmThreads;
      if (n >= N) continue;
      if (partials) partials[(int64_t(blockIdx.z) * M + m) * N + n] = acc[i][j];
      else store_scaled(c[int64_t(m) * N + n], acc[i][j], sT, sO);
    }
  }
}

__global__ void add_bias_kernel(const float* bias, float* targets, int64_t n, int64_t cols, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, n) store_scaled(targets[i], bias[i / cols], sT, sO);
}

__global__ void __launch_bounds__(kThreads)
bias_grad_kernel(const float* grads, float* targets, int64_t cols, float sT, float sO) {
  __shared__ float partial[kThreads];
  const float* row = grads + blockIdx.x * cols;
  float sum = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) sum += row[c];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) store_scaled(targets[blockIdx.x], partial[0], sT, sO);
}

__global__ void add_kernel(const float* a, float* targets, int64_t n, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, n) store_scaled(targets[i], a[i], sT, sO);
}

__global__ void mult_kernel(const float* a, const float* b, float* targets, int64_t n, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, n) store_scaled(targets[i], a[i] * b[i], sT, sO);
}

__global__ void eltwise_max_kernel(const float* a, const float* b, float* targets, int64_t n, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, n) store_scaled(targets[i], fmaxf(a[i], b[i]), sT, sO);
}

__global__ void eltwise_max_grad_kernel(const float* outGrads, const float* inputs, const float* acts,
                                        float* targets, int64_t n, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, n) store_scaled(targets[i], inputs[i] == acts[i] ? outGrads[i] : 0.f, sT, sO);
}

__global__ void dropout_mask_kernel(float* mask, int64_t n, int64_t cols, int64_t rowStride, float keep,
                                    float scale, uint64_t seed, uint64_t offset) {
  CCN_GRID_STRIDE_LOOP(i, n) {
    const uint64_t number = offset + uint64_t(i / cols * rowStride + i % cols);
    mask[i] = philox_uniform(seed, number) < keep ? scale : 0.f;
  }
}

__global__ void momentum_update_kernel(float* weights, const float* grads, float* inc, int64_t n,
                                       float epsOverCases, float mom, float wcEps) {
  CCN_GRID_STRIDE_LOOP(i, n) {
    float step = mom * inc[i] + epsOverCases * grads[i] - wcEps * weights[i];
    inc[i] = step;
    weights[i] += step;
  }
}

__global__ void copy_columns_kernel(const float* src, int64_t srcCols, float* targets, int64_t targetCols,
                                    int64_t count, int64_t n, float scaleTargets) {
  CCN_GRID_STRIDE_LOOP(i, n) {
    int64_t r = i / count, c = i - r * count;
    float& t = targets[r * targetCols + c];
    t = scaleTargets == 0.f ? src[r * srcCols + c] : scaleTargets * t + src[r * srcCols + c];
  }
}

__global__ void flag_non_finite_kernel(const float* x, int64_t n, float* flag) {
  CCN_GRID_STRIDE_LOOP(i, n) {
    if (!(fabsf(x[i]) <= 3.402823466e+38f)) atomicExch(flag, 1.f);  // false for NaN and +-Inf
  }
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, Tensor& c, bool transA, bool transB, float scaleTargets,
          float scaleOutput) {
  int64_t M = c.rows(), N = c.cols(), K = transA ? a.rows() : a.cols();
  if (M == 0 || N == 0) return;
  CCN_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "gemm: dimensions (", M, ", ", N, ", ", K,
            ") exceed the kernel's 32-bit sizes");
  check_grid_yz(ceil_div_host(M, kGemmTile), "gemm (rows of C)");
  set_device(c);
  // Few tiles of C and a long inner dimension (a fully-connected layer's forward pass on a
  // small batch): split K so that the GPU fills up. The split depends on the shapes only.
  int64_t tiles = int64_t(ceil_div_host(M, kGemmTile)) * ceil_div_host(N, kGemmTile);
  int64_t splits = std::min<int64_t>((kGemmTargetBlocks + tiles - 1) / tiles, K / kGemmMinSplitK);
  int kPerSplit = static_cast<int>(K);
  float* partials = nullptr;
  if (splits > 1) {
    kPerSplit = ceil_div_host(ceil_div_host(K, splits), kGemmChunk) * kGemmChunk;
    splits = ceil_div_host(K, kPerSplit);
    partials = workspace(c.device(), splits * M * N);
  } else {
    splits = 1;
  }
  dim3 grid(ceil_div_host(N, kGemmTile), ceil_div_host(M, kGemmTile), unsigned(splits));
  gemm_kernel<<<grid, dim3(kGemmThreads, kGemmThreads), 0, stream()>>>(
      a.data(), b.data(), c.data(), partials, int(M), int(N), int(K), kPerSplit, transA, transB, scaleTargets,
      scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("gemm_kernel");
  if (partials) sum_chunks(partials, int(splits), c.data(), M * N, scaleTargets, scaleOutput);
}

void addBias(const Tensor& bias, Tensor& targets, float scaleTargets, float scaleOutput) {
  int64_t n = targets.numel();
  if (n == 0) return;
  set_device(targets);
  add_bias_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(bias.data(), targets.data(), n,
                                                                      n / bias.numel(), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("add_bias_kernel");
}

void biasGrad(const Tensor& grads, Tensor& targets, float scaleTargets, float scaleOutput) {
  int64_t rows = targets.numel();
  if (rows == 0) return;
  CCN_CHECK(rows <= INT32_MAX, "biasGrad: ", rows, " rows exceed the kernel's grid");
  set_device(targets);
  bias_grad_kernel<<<unsigned(rows), kThreads, 0, stream()>>>(grads.data(), targets.data(), grads.numel() / rows,
                                                              scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("bias_grad_kernel");
}

void add(const Tensor& a, Tensor& targets, float scaleTargets, float scaleOutput) {
  int64_t n = targets.numel();
  if (n == 0) return;
  set_device(targets);
  add_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(a.data(), targets.data(), n, scaleTargets,
                                                                 scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("add_kernel");
}

void mult(const Tensor& a, const Tensor& b, Tensor& targets, float scaleTargets, float scaleOutput) {
  int64_t n = targets.numel();
  if (n == 0) return;
  set_device(targets);
  mult_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(a.data(), b.data(), targets.data(), n,
                                                                  scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("mult_kernel");
}

void eltwiseMax(const Tensor& a, const Tensor& b, Tensor& targets, float scaleTargets, float scaleOutput) {
  int64_t n = targets.numel();
  if (n == 0) return;
  set_device(targets);
  eltwise_max_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(a.data(), b.data(), targets.data(), n,
                                                                         scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("eltwise_max_kernel");
}

void eltwiseMaxGrad(const Tensor& outGrads, const Tensor& inputs, const Tensor& acts, Tensor& targets,
                    float scaleTargets, float scaleOutput) {
  int64_t n = targets.numel();
  if (n == 0) return;
  set_device(targets);
  eltwise_max_grad_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), inputs.data(), acts.data(), targets.data(), n, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("eltwise_max_grad_kernel");
}

void dropoutMask(Tensor& mask, float keep, uint64_t seed, uint64_t offset, int64_t rowStride) {
  int64_t n = mask.numel();
  if (n == 0) return;
  set_device(mask);
  dropout_mask_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(mask.data(), n, mask.cols(), rowStride,
                                                                          keep, 1.f / keep, seed, offset);
  CCN_CUDA_CHECK_LAUNCH("dropout_mask_kernel");
}

void momentumUpdate(Tensor& weights, const Tensor& grads, Tensor& inc, float epsOverCases, float mom,
                    float wcEps) {
  int64_t n = weights.numel();
  if (n == 0) return;
  set_device(weights);
  momentum_update_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(weights.data(), grads.data(),
                                                                             inc.data(), n, epsOverCases, mom,
                                                                             wcEps);
  CCN_CUDA_CHECK_LAUNCH("momentum_update_kernel");
}

void copyColumns(const Tensor& src, int64_t srcStart, Tensor& targets, int64_t targetStart, int64_t count,
                 float scaleTargets) {
  int64_t n = src.rows() * count;
  set_device(targets);
  copy_columns_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
      src.data() + srcStart, src.cols(), targets.data() + targetStart, targets.cols(), count, n, scaleTargets);
  CCN_CUDA_CHECK_LAUNCH("copy_columns_kernel");
}

void flagNonFinite(const Tensor& t, Tensor& flags, int64_t index) {
  int64_t n = t.numel();
  set_device(t);
  flag_non_finite_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(t.data(), n, flags.data() + index);
  CCN_CUDA_CHECK_LAUNCH("flag_non_finite_kernel");
}

}  // namespace ccn::cuda
