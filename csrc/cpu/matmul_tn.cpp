// C (M x N) = A^T B for A (K x M), B (K x N), row-major, with a long reduction axis K (the dictionary): the
// S-reductions of the per-entry backward (DESIGN §4 step 3). BLAS splits a long K across however many
// threads it has, which changes the rounding with the thread count; here K is split into a fixed number of
// groups (a function of K only) and their partial products are summed in group order.
#include <algorithm>
#include <vector>

#include "../api.h"
#include "gemm.h"

namespace mn::MN_ISA_NS {
namespace {

constexpr int64_t kMaxGroups = 32;
constexpr int64_t kMinRows = 256;  // rows per group at least: small K stays in one group

template <typename T>
void matmul_tn(int64_t K, int64_t M, int64_t N, const T* A, const T* B, T* C, int num_threads) {
  const int64_t ngroups = std::max<int64_t>(1, std::min(kMaxGroups, K / kMinRows));
  std::vector<T> part(ngroups * M * N, T(0));
#pragma omp parallel num_threads(num_threads)
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < ngroups; ++g) {
      const int64_t k0 = g * K / ngroups, k1 = (g + 1) * K / ngroups;
      gemm_acc<T>(M, N, k1 - k0, A + k0 * M, 1, M, B + k0 * N, N, part.data() + g * M * N, N);
    }
#pragma omp for schedule(static)
    for (int64_t e = 0; e < M * N; ++e) {
      T sum = 0;
      for (int64_t g = 0; g < ngroups; ++g) sum += part[g * M * N + e];
      C[e] = sum;
    }
  }
}

}  // namespace

void tn(DType dtype, int64_t K, int64_t M, int64_t N, const void* A, const void* B, void* C, int num_threads) {
  if (dtype == DType::f64)
    matmul_tn(K, M, N, static_cast<const double*>(A), static_cast<const double*>(B), static_cast<double*>(C),
              num_threads);
  else
    matmul_tn(K, M, N, static_cast<const float*>(A), static_cast<const float*>(B), static_cast<float*>(C),
              num_threads);
}

}  // namespace mn::MN_ISA_NS
