// Picks the CPU kernel variant for the running machine: the AVX2+FMA build where the CPU has both
// (x86-64 builds only), else the baseline build of the same source.
#include "../api.h"
#include "workspace.h"

namespace mn {
namespace generic {
void fwd(DType, Shape, Dropout, const FwdArgs&, int);
void bwd(DType, Shape, Dropout, const BwdArgs&, int);
void op_fwd(DType, Shape, double, Dropout, const OpFwdArgs&, int);
void op_bwd(DType, Shape, double, Dropout, const OpBwdArgs&, int);
void later_fwd(DType, Shape, Dropout, const LaterOperands&, const LaterFwdArgs&, int);
void later_bwd(DType, Shape, Dropout, const LaterOperands&, const LaterBwdArgs&, int);
}  // namespace generic
#ifdef MN_HAVE_AVX2
namespace avx2 {
void fwd(DType, Shape, Dropout, const FwdArgs&, int);
void bwd(DType, Shape, Dropout, const BwdArgs&, int);
void op_fwd(DType, Shape, double, Dropout, const OpFwdArgs&, int);
void op_bwd(DType, Shape, double, Dropout, const OpBwdArgs&, int);
void later_fwd(DType, Shape, Dropout, const LaterOperands&, const LaterFwdArgs&, int);
void later_bwd(DType, Shape, Dropout, const LaterOperands&, const LaterBwdArgs&, int);
}  // namespace avx2
#endif

namespace {
bool use_avx2() {
#ifdef MN_HAVE_AVX2
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}
}  // namespace

const char* cpu_isa() { return use_avx2() ? "avx2+fma" : "baseline"; }

void inner_gradient_fwd_cpu(DType dtype, Shape shape, Dropout drop, const FwdArgs& args, int num_threads) {
#ifdef MN_HAVE_AVX2
  if (use_avx2()) return avx2::fwd(dtype, shape, drop, args, num_threads);
#endif
  generic::fwd(dtype, shape, drop, args, num_threads);
}

void inner_gradient_bwd_cpu(DType dtype, Shape shape, Dropout drop, const BwdArgs& args, int num_threads) {
#ifdef MN_HAVE_AVX2
  if (use_avx2()) return avx2::bwd(dtype, shape, drop, args, num_threads);
#endif
  generic::bwd(dtype, shape, drop, args, num_threads);
}

int64_t op_workspace_size(Shape shape) { return WorkspaceLayout(shape).size; }

void op_fwd_cpu(DType dtype, Shape shape, double gamma, Dropout drop, const OpFwdArgs& args, int num_threads) {
#ifdef MN_HAVE_AVX2
  if (use_avx2()) return avx2::op_fwd(dtype, shape, gamma, drop, args, num_threads);
#endif
  generic::op_fwd(dtype, shape, gamma, drop, args, num_threads);
}

void op_bwd_cpu(DType dtype, Shape shape, double gamma, Dropout drop, const OpBwdArgs& args, int num_threads) {
#ifdef MN_HAVE_AVX2
  if (use_avx2()) return avx2::op_bwd(dtype, shape, gamma, drop, args, num_threads);
#endif
  generic::op_bwd(dtype, shape, gamma, drop, args, num_threads);
}

void later_step_fwd_cpu(DType dtype, Shape shape, Dropout drop, const LaterOperands& ops, const LaterFwdArgs& args,
                        int num_threads) {
#ifdef MN_HAVE_AVX2
  if (use_avx2()) return avx2::later_fwd(dtype, shape, drop, ops, args, num_threads);
#endif
  generic::later_fwd(dtype, shape, drop, ops, args, num_threads);
}

void later_step_bwd_cpu(DType dtype, Shape shape, Dropout drop, const LaterOperands& ops, const LaterBwdArgs& args,
                        int num_threads) {
#ifdef MN_HAVE_AVX2
  if (use_avx2()) return avx2::later_bwd(dtype, shape, drop, ops, args, num_threads);
#endif
  generic::later_bwd(dtype, shape, drop, ops, args, num_threads);
}

}  // namespace mn
