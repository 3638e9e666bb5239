// C entry points to the CUDA kernels of csrc/cuda compiled for the CPU emulation (cuda_emulation.h), with the
// arguments of mn._C's inner_gradient_fwd / _bwd bindings (no device, thread count or stream), for ctypes.
#include <cstdint>

#include "../../csrc/api.h"

extern "C" {

void emulated_fwd(int f64, int64_t B, int64_t S, int64_t C, int64_t n, const int64_t* seed_mix, uint32_t threshold,
                  void* zs, void* kh, void* khT, void* deltaT, void* ce, void* lse, void* U, void* loss) {
  const mn::FwdArgs args{zs, kh, khT, deltaT, ce, lse, U, loss};
  mn::inner_gradient_fwd_cuda(f64 ? mn::DType::f64 : mn::DType::f32, {B, S, C, n}, {seed_mix, threshold}, args, 0);
}

void emulated_bwd(int f64, int64_t B, int64_t S, int64_t C, int64_t n, const int64_t* seed_mix, uint32_t threshold,
                  void* zs, void* kh, void* khT, void* deltaT, void* ce, void* lse, void* dU, void* dL, void* D,
                  void* dzh, void* dkh, void* ddelta, void* dce) {
  const mn::BwdArgs args{zs, kh, khT, deltaT, ce, lse, dU, dL, D, dzh, dkh, ddelta, dce};
  mn::inner_gradient_bwd_cuda(f64 ? mn::DType::f64 : mn::DType::f32, {B, S, C, n}, {seed_mix, threshold}, args, 0);
}

}  // extern "C"
