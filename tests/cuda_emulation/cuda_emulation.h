// Just enough of CUDA to run the kernels of csrc/cuda on a CPU, for tests on machines without a GPU
// (tests/test_native_cuda_emulated.py). Included instead of <cuda_runtime.h> when MN_CUDA_EMULATION is set.
//
// A launch runs the grid's blocks one after another; each block's threads are OS threads that meet at
// __syncthreads() on a std::barrier. Because one block runs at a time, `__shared__` can be `static`: every
// thread of the running block sees the same array, as in CUDA. A thread that returns leaves the barrier
// (arrive_and_drop), as exited threads stop counting for __syncthreads on the GPU. What this cannot show:
// races between blocks (they never overlap here), timing, and anything of the memory model beyond the
// barrier's ordering -- the GPU tests still have the last word.
#pragma once
#include <math.h>

#include <barrier>
#include <cstdint>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

using cudaStream_t = struct CUstream_st*;
enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }

namespace mn_emulation {
inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::barrier<>* block_barrier = nullptr;

// kernel(args...) on every thread of every block of `grid`, blocks in order.
template <typename Kernel>
auto launch(Kernel kernel, dim3 grid, dim3 block) {
  return [=](auto... args) {
    grid_dim = grid;
    block_dim = block;
    const unsigned threads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          std::barrier<> barrier(threads);
          block_barrier = &barrier;
          std::vector<std::thread> pool;
          pool.reserve(threads);
          for (unsigned t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
              thread_idx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
              block_idx = dim3(bx, by, bz);
              kernel(args...);
              barrier.arrive_and_drop();
            });
          for (auto& thread : pool) thread.join();
        }
  };
}
}  // namespace mn_emulation

#define threadIdx mn_emulation::thread_idx
#define blockIdx mn_emulation::block_idx
#define blockDim mn_emulation::block_dim
#define gridDim mn_emulation::grid_dim
inline void __syncthreads() { mn_emulation::block_barrier->arrive_and_wait(); }

#define MN_LAUNCH(kernel, grid, block, stream) mn_emulation::launch(kernel, dim3(grid), dim3(block))
