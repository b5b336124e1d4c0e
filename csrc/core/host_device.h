// CCN_HOST_DEVICE: a small function compiled for the host and, under nvcc, for the device too,
// so that the CPU and CUDA backends share one definition of a formula.
#pragma once

#if defined(__CUDACC__)
#define CCN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CCN_HOST_DEVICE inline
#endif
