// A small register-blocked matrix multiply-accumulate, the only O(B S C n) arithmetic of the CPU kernels:
//     C[m * ldc + j] += sum_k A(m, k) * B[k * ldb + j],   A(m, k) = A[m * sam + k * sak]
// for m < M, j < N, k < K (gemm_acc; gemm_set overwrites C instead). A is addressed through two strides so
// that one routine serves A, A^T and row-strided operands without copies; B and C are row-major. An
// MR x (2 vectors) accumulator tile lives in registers (GCC/Clang vector extensions, as wide as the
// instruction set of this translation unit allows). Every element accumulates its products in the order
// k = 0..K-1 with the same operations (fused multiply-add where the ISA has it) in the vector and the scalar
// edge path, so a result does not depend on M, N or how the caller blocks the problem -- what keeps the
// kernels deterministic and thread-count independent.
#pragma once
#include <cstdint>

#ifndef MN_MR
#define MN_MR 4
#endif
#ifndef MN_VEC_BYTES
#define MN_VEC_BYTES 16
#endif

namespace mn::MN_ISA_NS {

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(MN_VEC_BYTES)));
  // The same vector at any element-aligned address: loads and stores straight between memory and a register.
  typedef T unaligned __attribute__((vector_size(MN_VEC_BYTES), aligned(sizeof(T)), may_alias));
  static constexpr int width = MN_VEC_BYTES / sizeof(T);
};

// Direct vector loads and stores: the accumulator tile moved through std::memcpy compiled to 16-byte copies via
// the stack and a 32-byte reload, which stalled on store forwarding at the start of every micro tile.
template <typename T>
inline typename Vec<T>::type load_vec(const T* p) {
  return *reinterpret_cast<const typename Vec<T>::unaligned*>(p);
}

template <typename T>
inline void store_vec(T* p, typename Vec<T>::type v) {
  *reinterpret_cast<typename Vec<T>::unaligned*>(p) = v;
}

constexpr int kNV = 2;  // vectors per accumulator row

template <typename T>
constexpr int64_t gemm_nr() { return kNV * Vec<T>::width; }

// C (MR x NR) += A (MR x K) B (K x NR), NR = gemm_nr<T>(); with Set, C = A B (the accumulators start at 0
// instead of C: the same bits as zero-filling C first, without the fill and the reload).
template <typename T, int MR, bool Set>
inline void micro_tile(int64_t K, const T* A, int64_t sam, int64_t sak, const T* B, int64_t ldb, T* C,
                       int64_t ldc) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::width;
  V acc[MR][kNV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kNV; ++v) acc[r][v] = Set ? V{} : load_vec(C + r * ldc + v * W);
  for (int64_t k = 0; k < K; ++k) {
    V b[kNV];
    for (int v = 0; v < kNV; ++v) b[v] = load_vec(B + k * ldb + v * W);
    for (int r = 0; r < MR; ++r) {
      // scalar * vector: GCC and Clang broadcast s with one instruction (vbroadcastss). Building the
      // broadcast lane by lane instead compiled to a chain of inserts and a spilled accumulator, which
      // held the kernel at about a third of peak.
      const T s = A[r * sam + k * sak];
      for (int v = 0; v < kNV; ++v) acc[r][v] += s * b[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kNV; ++v) store_vec(C + r * ldc + v * W, acc[r][v]);
}

// Fewer than MR rows: the same vector code, instantiated for each row count.
template <typename T, int MR, bool Set>
inline void micro_rows(int64_t mr, int64_t K, const T* A, int64_t sam, int64_t sak, const T* B, int64_t ldb,
                       T* C, int64_t ldc) {
  if constexpr (MR > 1) {
    if (mr < MR) return micro_rows<T, MR - 1, Set>(mr, K, A, sam, sak, B, ldb, C, ldc);
  }
  micro_tile<T, MR, Set>(K, A, sam, sak, B, ldb, C, ldc);
}

// The last nr < NR columns, scalar.
template <typename T, bool Set>
inline void edge_columns(int64_t mr, int64_t nr, int64_t K, const T* A, int64_t sam, int64_t sak, const T* B,
                         int64_t ldb, T* C, int64_t ldc) {
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t t = 0; t < nr; ++t) {
      T acc = Set ? T(0) : C[r * ldc + t];
      for (int64_t k = 0; k < K; ++k) acc += A[r * sam + k * sak] * B[k * ldb + t];
      C[r * ldc + t] = acc;
    }
}

template <typename T, bool Set>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t sam, int64_t sak, const T* B, int64_t ldb, T* C,
          int64_t ldc) {
  constexpr int MR = MN_MR;
  constexpr int64_t NR = gemm_nr<T>();
  // Column panels outermost: the K x NR panel of B stays in L1 while every row block of A streams past it.
  for (int64_t j0 = 0; j0 < N; j0 += NR) {
    const int64_t nr = N - j0 < NR ? N - j0 : NR;
    for (int64_t m0 = 0; m0 < M; m0 += MR) {
      const int64_t mr = M - m0 < MR ? M - m0 : MR;
      const T* a = A + m0 * sam;
      T* c = C + m0 * ldc + j0;
      if (nr == NR)
        micro_rows<T, MR, Set>(mr, K, a, sam, sak, B + j0, ldb, c, ldc);
      else
        edge_columns<T, Set>(mr, nr, K, a, sam, sak, B + j0, ldb, c, ldc);
    }
  }
}

// C += A B
template <typename T>
void gemm_acc(int64_t M, int64_t N, int64_t K, const T* A, int64_t sam, int64_t sak, const T* B, int64_t ldb,
              T* C, int64_t ldc) {
  gemm<T, false>(M, N, K, A, sam, sak, B, ldb, C, ldc);
}

// C = A B
template <typename T>
void gemm_set(int64_t M, int64_t N, int64_t K, const T* A, int64_t sam, int64_t sak, const T* B, int64_t ldb,
              T* C, int64_t ldc) {
  gemm<T, true>(M, N, K, A, sam, sak, B, ldb, C, ldc);
}

}  // namespace mn::MN_ISA_NS
