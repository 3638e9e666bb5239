// The C++ surface of mn._C: plain pointers, sizes and a stream handle (no libtorch types, so one build works
// with any torch). Python (mn/native_ops.py) validates dtype, device and contiguity before calling.
// inner_gradient_{fwd,bwd}_{cpu,cuda} do the O(B S C n) contractions (docs/design.md, "Kernel plan") on operands
// that Python prepared; on CPU, op_{fwd,bwd}_cpu run the whole op around them (normalisations, per-entry softmax and
// cross-entropy, projection, and their backward) in one call each.
#pragma once
#include <cstdint>

namespace mn {

enum class DType { f32, f64 };

struct Shape {
  int64_t B, S, C, n;  // queries, dictionary entries, classes, features
};

// Entry dropout (docs/design.md, "Entry dropout"): entry j is dropped for query i iff
// (hash(seed_mix, i, j) >> 8) < threshold. The seed's part of the hash is read from memory (the CPU's for the CPU
// kernels, the GPU's for the CUDA ones), so that a step needs no host value and a CUDA graph replays with the
// seed its tensor holds then.
struct Dropout {
  const int64_t* seed_mix;  // -> seed * 0x9E3779B1 mod 2^32; read only when threshold > 0
  uint32_t threshold;       // 0: no dropout
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
const char* cpu_isa();  // the instruction set the CPU kernels dispatch to on this machine

// The whole op on CPU (docs/design.md, "Forward" and "Backward"), inputs and outputs in the compute dtype,
// contiguous. The forward leaves what the backward needs in a workspace of op_workspace_size(shape) elements
// (hats, norms, per-entry terms, the contraction's operands; layout in csrc/cpu/op_cpu.cpp),
// O(B n + S (C + n) + C n).
struct OpFwdArgs {
  const void *z, *keys, *values, *weight, *tau;  // (B x n), (S x n), (S x C), (C x n), scalar
  void *ws;                                      // out: the workspace
  void *grad;                                    // out (B x C x n): P_c U_ic
  void *loss;                                    // out (B): sum_j w_ij ce_j
  void *lse;                                     // out (B), as FwdArgs
  void *a;                                       // out (B x C): wh_c . U_ic, the part the projection removes
};

struct OpBwdArgs {
  const void *values, *tau, *ws, *lse, *a, *grad, *loss;  // the forward's inputs and outputs
  const void *dgrad, *dloss;                               // cotangents (B x C x n), (B)
  void *dz, *dkeys, *dvalues, *dweight, *dtau;             // out: gradients, shaped like z, keys, values, ...
};

int64_t op_workspace_size(Shape shape);
void op_fwd_cpu(DType dtype, Shape shape, double gamma, Dropout drop, const OpFwdArgs& args, int num_threads);
void op_bwd_cpu(DType dtype, Shape shape, double gamma, Dropout drop, const OpBwdArgs& args, int num_threads);

// The later inner step on CPU (docs/design.md, "Later inner steps"), per-example weights: Python prepares the
// normalised rows and the projection's host terms; the kernels do every O(B S C n) term. Compute dtype,
// contiguous. zs (B x n) = gamma zh, kh (S x n), khT (n x S), ph (B x C x n) the normalised per-example weights,
// p_rnorm (B x C) their reciprocal norms, vT (C x S) the values, sigma (S) their row sums, tau a scalar.
struct LaterOperands {
  const void *zs, *kh, *khT, *ph, *p_rnorm, *vT, *sigma, *tau;
};

struct LaterFwdArgs {
  void *lse;   // out (B), as FwdArgs
  void *grad;  // out (B x C x n): P_ic U_ic with each query's own projection
  void *loss;  // out (B)
  void *a;     // out (B x C): phh_ic . U_ic
};

// dU (B x C x n) = P_ic dgrad_ic, dL (B), D (B) = <grad_i, dgrad_i> + dL_i loss_i.
struct LaterBwdArgs {
  const void *lse, *dU, *dL, *D;
  void *dzh;   // out (B x n): sum_j ds_ij kh_j (the caller multiplies by gamma)
  void *dph;   // out (B x C x n): tau sum_j dl_ijc kh_j, the gradient of the normalised weights
  void *dkh;   // out (S x n)
  void *dv;    // out (S x C)
  void *dtau;  // out (1)
};

void later_step_fwd_cpu(DType dtype, Shape shape, Dropout drop, const LaterOperands& ops, const LaterFwdArgs& args,
                        int num_threads);
void later_step_bwd_cpu(DType dtype, Shape shape, Dropout drop, const LaterOperands& ops, const LaterBwdArgs& args,
                        int num_threads);

#ifdef MN_WITH_CUDA
void inner_gradient_fwd_cuda(DType dtype, Shape shape, Dropout drop, const FwdArgs& args, uintptr_t stream);
void inner_gradient_bwd_cuda(DType dtype, Shape shape, Dropout drop, const BwdArgs& args, uintptr_t stream);
#endif

}  // namespace mn
