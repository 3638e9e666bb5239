// pybind11 module mn._C. Arguments are plain integers: data pointers (tensor.data_ptr()), sizes, the dropout
// hash constants, a thread count (CPU) and a stream handle (CUDA). mn/native_ops.py checks dtype, device,
// contiguity and shapes before calling; nothing here knows about torch.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "api.h"

namespace py = pybind11;

namespace {

mn::DType parse_dtype(const std::string& dtype) {
  if (dtype == "float32") return mn::DType::f32;
  if (dtype == "float64") return mn::DType::f64;
  throw std::invalid_argument("mn._C: dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

void* ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

void check_device(const std::string& device) {
  if (device == "cpu") return;
#ifdef MN_WITH_CUDA
  if (device == "cuda") return;
  throw std::invalid_argument("mn._C: device must be 'cpu' or 'cuda', got '" + device + "'");
#else
  throw std::invalid_argument("mn._C: device must be 'cpu' (this build has no CUDA kernels), got '" + device + "'");
#endif
}

void fwd(const std::string& device, const std::string& dtype, int64_t B, int64_t S, int64_t C, int64_t n,
         uint32_t seed_mix, uint32_t threshold, uintptr_t zs, uintptr_t kh, uintptr_t khT, uintptr_t deltaT,
         uintptr_t ce, uintptr_t lse, uintptr_t U, uintptr_t loss, int num_threads, uintptr_t stream) {
  check_device(device);
  const mn::DType dt = parse_dtype(dtype);
  const mn::FwdArgs args{ptr(zs), ptr(kh), ptr(khT), ptr(deltaT), ptr(ce), ptr(lse), ptr(U), ptr(loss)};
  py::gil_scoped_release release;
#ifdef MN_WITH_CUDA
  if (device == "cuda") return mn::inner_gradient_fwd_cuda(dt, {B, S, C, n}, {seed_mix, threshold}, args, stream);
#endif
  (void)stream;
  mn::inner_gradient_fwd_cpu(dt, {B, S, C, n}, {seed_mix, threshold}, args, num_threads);
}

void bwd(const std::string& device, const std::string& dtype, int64_t B, int64_t S, int64_t C, int64_t n,
         uint32_t seed_mix, uint32_t threshold, uintptr_t zs, uintptr_t kh, uintptr_t khT, uintptr_t deltaT,
         uintptr_t ce, uintptr_t lse, uintptr_t dU, uintptr_t dL, uintptr_t D, uintptr_t dzh, uintptr_t dkh,
         uintptr_t ddelta, uintptr_t dce, int num_threads, uintptr_t stream) {
  check_device(device);
  const mn::DType dt = parse_dtype(dtype);
  const mn::BwdArgs args{ptr(zs), ptr(kh), ptr(khT), ptr(deltaT), ptr(ce), ptr(lse), ptr(dU), ptr(dL), ptr(D),
                         ptr(dzh), ptr(dkh), ptr(ddelta), ptr(dce)};
  py::gil_scoped_release release;
#ifdef MN_WITH_CUDA
  if (device == "cuda") return mn::inner_gradient_bwd_cuda(dt, {B, S, C, n}, {seed_mix, threshold}, args, stream);
#endif
  (void)stream;
  mn::inner_gradient_bwd_cpu(dt, {B, S, C, n}, {seed_mix, threshold}, args, num_threads);
}

void matmul_tn(const std::string& dtype, int64_t K, int64_t M, int64_t N, uintptr_t A, uintptr_t B, uintptr_t C,
               int num_threads) {
  const mn::DType dt = parse_dtype(dtype);
  py::gil_scoped_release release;
  mn::matmul_tn_cpu(dt, K, M, N, ptr(A), ptr(B), ptr(C), num_threads);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Native (C++/OpenMP and CUDA) kernels of mn; called through mn.native_ops, never directly.";
#ifdef MN_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  m.def("cpu_isa", &mn::cpu_isa, "Instruction set the CPU kernels use on this machine.");
  m.def("matmul_tn", &matmul_tn, "C (M x N) = A^T B for A (K x M), B (K x N), CPU; rounding independent of threads.");
  m.def("inner_gradient_fwd", &fwd,
        "Forward contraction: lse (B), U (B x C x n, before the projection), loss (B). See csrc/api.h.");
  m.def("inner_gradient_bwd", &bwd,
        "Backward contractions: dzh (B x n, without gamma), dkh (S x n), ddelta (S x C), dce (S).");
}
