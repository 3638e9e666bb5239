// The C++ surface of mn._C: plain pointers, sizes and a stream handle (no libtorch types, so one build works
// with any torch). Python (mn/native_ops.py) validates dtype, device and contiguity before calling, and
// prepares the per-entry terms; these functions do only the O(B S C n) contractions (DESIGN §4-5).
#pragma once
#include <cstdint>

namespace mn {

enum class DType { f32, f64 };

struct Shape {
  int64_t B, S, C, n;  // queries, dictionary entries, classes, features
};

// Entry dropout (DESIGN §5): entry j is dropped for query i iff (hash(seed_mix, i, j) >> 8) < threshold.
struct Dropout {
  uint32_t seed_mix;   // seed * 0x9E3779B1 mod 2^32
  uint32_t threshold;  // 0: no dropout
};

// All arrays contiguous, row-major, in the compute dtype. zs = gamma * zh (B x n), kh (S x n), khT = kh^T
// (n x S), deltaT = delta^T (C x S), ce (S).
struct FwdArgs {
  const void *zs, *kh, *khT, *deltaT, *ce;
  void *lse;   // out (B): log sum_j exp(s_ij) over kept entries, -inf when none is kept
  void *U;     // out (B x C x n): sum_j w_ij delta_jc kh_j (before the projection P_c)
  void *loss;  // out (B): sum_j w_ij ce_j
};

// dU (B x C x n) = P_c dgrad, dL (B), D (B) = <grad_i, dgrad_i> + dL_i loss_i.
struct BwdArgs {
  const void *zs, *kh, *khT, *deltaT, *ce, *lse, *dU, *dL, *D;
  void *dzh;     // out (B x n): sum_j ds_ij kh_j (the caller multiplies by gamma)
  void *dkh;     // out (S x n): sum_i sum_c w_ij delta_jc dU_ic + sum_i ds_ij zs_i
  void *ddelta;  // out (S x C): sum_i w_ij X_icj
  void *dce;     // out (S): sum_i w_ij dL_i
};

void inner_gradient_fwd_cpu(DType dtype, Shape shape, Dropout drop, const FwdArgs& args, int num_threads);
void inner_gradient_bwd_cpu(DType dtype, Shape shape, Dropout drop, const BwdArgs& args, int num_threads);
// C (M x N) = A^T B, A (K x M), B (K x N): the long-K reductions, with rounding independent of num_threads.
void matmul_tn_cpu(DType dtype, int64_t K, int64_t M, int64_t N, const void* A, const void* B, void* C,
                   int num_threads);
const char* cpu_isa();  // the instruction set the CPU kernels dispatch to on this machine

#ifdef MN_WITH_CUDA
void inner_gradient_fwd_cuda(DType dtype, Shape shape, Dropout drop, const FwdArgs& args, uintptr_t stream);
void inner_gradient_bwd_cuda(DType dtype, Shape shape, Dropout drop, const BwdArgs& args, uintptr_t stream);
#endif

}  // namespace mn
