// pybind11 module mn._C. Arguments are plain integers: data pointers (tensor.data_ptr()), sizes, the dropout
// hash constants, gamma, a thread count (CPU) and a stream handle (CUDA). mn/native_ops.py checks dtype, device,
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

// seed_mix: the address of the seed's part of the hash (an int64 in the kernels' memory), 0 without dropout.
mn::Dropout dropout(uintptr_t seed_mix, uint32_t threshold) {
  if (threshold != 0 && seed_mix == 0) throw std::invalid_argument("mn._C: entry dropout without a seed address");
  return {reinterpret_cast<const int64_t*>(seed_mix), threshold};
}

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
         uintptr_t seed_mix, uint32_t threshold, uintptr_t zs, uintptr_t kh, uintptr_t khT, uintptr_t deltaT,
         uintptr_t ce, uintptr_t lse, uintptr_t U, uintptr_t loss, int num_threads, uintptr_t stream) {
  check_device(device);
  const mn::DType dt = parse_dtype(dtype);
  const mn::FwdArgs args{ptr(zs), ptr(kh), ptr(khT), ptr(deltaT), ptr(ce), ptr(lse), ptr(U), ptr(loss)};
  py::gil_scoped_release release;
#ifdef MN_WITH_CUDA
  if (device == "cuda")
    return mn::inner_gradient_fwd_cuda(dt, {B, S, C, n}, dropout(seed_mix, threshold), args, stream);
#endif
  (void)stream;
  mn::inner_gradient_fwd_cpu(dt, {B, S, C, n}, dropout(seed_mix, threshold), args, num_threads);
}

void bwd(const std::string& device, const std::string& dtype, int64_t B, int64_t S, int64_t C, int64_t n,
         uintptr_t seed_mix, uint32_t threshold, uintptr_t zs, uintptr_t kh, uintptr_t khT, uintptr_t deltaT,
         uintptr_t ce, uintptr_t lse, uintptr_t dU, uintptr_t dL, uintptr_t D, uintptr_t dzh, uintptr_t dkh,
         uintptr_t ddelta, uintptr_t dce, int num_threads, uintptr_t stream) {
  check_device(device);
  const mn::DType dt = parse_dtype(dtype);
  const mn::BwdArgs args{ptr(zs), ptr(kh), ptr(khT), ptr(deltaT), ptr(ce), ptr(lse), ptr(dU), ptr(dL), ptr(D),
                         ptr(dzh), ptr(dkh), ptr(ddelta), ptr(dce)};
  py::gil_scoped_release release;
#ifdef MN_WITH_CUDA
  if (device == "cuda")
    return mn::inner_gradient_bwd_cuda(dt, {B, S, C, n}, dropout(seed_mix, threshold), args, stream);
#endif
  (void)stream;
  mn::inner_gradient_bwd_cpu(dt, {B, S, C, n}, dropout(seed_mix, threshold), args, num_threads);
}

void check_workspace(mn::Shape shape, int64_t ws_size) {
  const int64_t want = mn::op_workspace_size(shape);
  if (ws_size != want)
    throw std::invalid_argument("mn._C: workspace of " + std::to_string(ws_size) + " elements, expected " +
                                std::to_string(want));
}

void op_fwd(const std::string& dtype, int64_t B, int64_t S, int64_t C, int64_t n, double gamma, uintptr_t seed_mix,
            uint32_t threshold, int64_t ws_size, uintptr_t z, uintptr_t keys, uintptr_t values, uintptr_t weight,
            uintptr_t tau, uintptr_t ws, uintptr_t grad, uintptr_t loss, uintptr_t lse, uintptr_t a,
            int num_threads) {
  const mn::DType dt = parse_dtype(dtype);
  check_workspace({B, S, C, n}, ws_size);
  const mn::OpFwdArgs args{ptr(z), ptr(keys), ptr(values), ptr(weight), ptr(tau), ptr(ws), ptr(grad), ptr(loss),
                           ptr(lse), ptr(a)};
  py::gil_scoped_release release;
  mn::op_fwd_cpu(dt, {B, S, C, n}, gamma, dropout(seed_mix, threshold), args, num_threads);
}

void op_bwd(const std::string& dtype, int64_t B, int64_t S, int64_t C, int64_t n, double gamma, uintptr_t seed_mix,
            uint32_t threshold, int64_t ws_size, uintptr_t values, uintptr_t tau, uintptr_t ws, uintptr_t lse,
            uintptr_t a, uintptr_t grad, uintptr_t loss, uintptr_t dgrad, uintptr_t dloss, uintptr_t dz,
            uintptr_t dkeys, uintptr_t dvalues, uintptr_t dweight, uintptr_t dtau, int num_threads) {
  const mn::DType dt = parse_dtype(dtype);
  check_workspace({B, S, C, n}, ws_size);
  const mn::OpBwdArgs args{ptr(values), ptr(tau),   ptr(ws),      ptr(lse),     ptr(a),      ptr(grad), ptr(loss),
                           ptr(dgrad),  ptr(dloss), ptr(dz),      ptr(dkeys),   ptr(dvalues), ptr(dweight),
                           ptr(dtau)};
  py::gil_scoped_release release;
  mn::op_bwd_cpu(dt, {B, S, C, n}, gamma, dropout(seed_mix, threshold), args, num_threads);
}

mn::LaterOperands later_operands(uintptr_t zs, uintptr_t kh, uintptr_t khT, uintptr_t ph, uintptr_t p_rnorm,
                                 uintptr_t vT, uintptr_t sigma, uintptr_t tau) {
  return {ptr(zs), ptr(kh), ptr(khT), ptr(ph), ptr(p_rnorm), ptr(vT), ptr(sigma), ptr(tau)};
}

void later_fwd(const std::string& dtype, int64_t B, int64_t S, int64_t C, int64_t n, uintptr_t seed_mix,
               uint32_t threshold, uintptr_t zs, uintptr_t kh, uintptr_t khT, uintptr_t ph, uintptr_t p_rnorm,
               uintptr_t vT, uintptr_t sigma, uintptr_t tau, uintptr_t lse, uintptr_t grad, uintptr_t loss,
               uintptr_t a, int num_threads) {
  const mn::DType dt = parse_dtype(dtype);
  const auto ops = later_operands(zs, kh, khT, ph, p_rnorm, vT, sigma, tau);
  const mn::LaterFwdArgs args{ptr(lse), ptr(grad), ptr(loss), ptr(a)};
  py::gil_scoped_release release;
  mn::later_step_fwd_cpu(dt, {B, S, C, n}, dropout(seed_mix, threshold), ops, args, num_threads);
}

void later_bwd(const std::string& dtype, int64_t B, int64_t S, int64_t C, int64_t n, uintptr_t seed_mix,
               uint32_t threshold, uintptr_t zs, uintptr_t kh, uintptr_t khT, uintptr_t ph, uintptr_t p_rnorm,
               uintptr_t vT, uintptr_t sigma, uintptr_t tau, uintptr_t lse, uintptr_t dU, uintptr_t dL, uintptr_t D,
               uintptr_t dzh, uintptr_t dph, uintptr_t dkh, uintptr_t dv, uintptr_t dtau, int num_threads) {
  const mn::DType dt = parse_dtype(dtype);
  const auto ops = later_operands(zs, kh, khT, ph, p_rnorm, vT, sigma, tau);
  const mn::LaterBwdArgs args{ptr(lse), ptr(dU), ptr(dL), ptr(D), ptr(dzh), ptr(dph), ptr(dkh), ptr(dv), ptr(dtau)};
  py::gil_scoped_release release;
  mn::later_step_bwd_cpu(dt, {B, S, C, n}, dropout(seed_mix, threshold), ops, args, num_threads);
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
  m.def("inner_gradient_fwd", &fwd,
        "Forward contraction: lse (B), U (B x C x n, before the projection), loss (B). See csrc/api.h.");
  m.def("inner_gradient_bwd", &bwd,
        "Backward contractions: dzh (B x n, without gamma), dkh (S x n), ddelta (S x C), dce (S).");
  m.def("op_fwd", &op_fwd,
        "The whole forward on CPU: grad (B x C x n), loss, lse (B), a (B x C) and the workspace. See csrc/api.h.");
  m.def("op_bwd", &op_bwd, "The whole backward on CPU: dz, dkeys, dvalues, dweight, dtau. See csrc/api.h.");
  m.def("later_step_fwd", &later_fwd,
        "The later inner step's forward on CPU: lse (B), grad (B x C x n), loss (B), a (B x C). See csrc/api.h.");
  m.def("later_step_bwd", &later_bwd,
        "The later inner step's backward on CPU: dzh (B x n, without gamma), dph, dkh, dv, dtau. See csrc/api.h.");
  m.def(
      "op_workspace_size",
      [](int64_t B, int64_t S, int64_t C, int64_t n) { return mn::op_workspace_size({B, S, C, n}); },
      "Elements of the workspace op_fwd fills for op_bwd (layout: csrc/cpu/workspace.h).");
}
