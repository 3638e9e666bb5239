// Picks the CPU kernel variant for the running machine: the AVX2+FMA build where the CPU has both
// (x86-64 builds only), else the baseline build of the same source.
#include "../api.h"

namespace mn {
namespace generic {
void fwd(DType, Shape, Dropout, const FwdArgs&, int);
void bwd(DType, Shape, Dropout, const BwdArgs&, int);
void tn(DType, int64_t, int64_t, int64_t, const void*, const void*, void*, int);
}  // namespace generic
#ifdef MN_HAVE_AVX2
namespace avx2 {
void fwd(DType, Shape, Dropout, const FwdArgs&, int);
void bwd(DType, Shape, Dropout, const BwdArgs&, int);
void tn(DType, int64_t, int64_t, int64_t, const void*, const void*, void*, int);
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

void matmul_tn_cpu(DType dtype, int64_t K, int64_t M, int64_t N, const void* A, const void* B, void* C,
                   int num_threads) {
#ifdef MN_HAVE_AVX2
  if (use_avx2()) return avx2::tn(dtype, K, M, N, A, B, C, num_threads);
#endif
  generic::tn(dtype, K, M, N, A, B, C, num_threads);
}

}  // namespace mn
