// The entry-dropout hash of docs/design.md, "Entry dropout", shared by the CPU and CUDA kernels (uint32 wrap-around
// arithmetic). Its constants mirror mn_kernels/dropout.py; the dropout cases of tests/test_fused.py check the two
// agree.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MN_HOST_DEVICE inline
#endif

namespace mn {

MN_HOST_DEVICE bool entry_kept(uint32_t seed_mix, uint32_t threshold, int64_t i, int64_t j) {
  uint32_t x = seed_mix ^ (static_cast<uint32_t>(i) * 0x85EBCA77u) ^ (static_cast<uint32_t>(j) * 0xC2B2AE3Du);
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return (x >> 8) >= threshold;
}

}  // namespace mn
